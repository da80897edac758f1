//! [`forward_store!`](crate::forward_store): one macro that forwards a part of the store contract
//! to an inner store, so a wrapper (`Arc`, `Box`, a fault injector, a test store that breaks one
//! rule) never falls back on a default and silently drops a method.

/// Implements a part of the store contract for a wrapper by forwarding every method to an inner
/// store: `forward_store!(impl[generics] Part for Wrapper, |w| inner)`, where `Part` is
/// `ClaimStore`, `EnqueueStore`, `InspectStore`, `RepairStore`, or `Store` for all four, and
/// `inner` reaches the inner store from `w: &Wrapper`.
///
/// `, check |w, method| expr` (parts other than `ClaimStore`) runs `expr` — a
/// `Result<(), StoreError>` — before each forwarded call, with `method` the method's name; an
/// error is returned instead of calling the inner store (a fault injector's switch).
///
/// A wrapper that changes some methods of a part implements that part by hand (with
/// `#[deny(clippy::missing_trait_methods)]`, so a method added later is not left on its
/// default) and forwards the others with this macro. Adding a method to a part then changes this
/// macro once, and no wrapper.
///
/// ```
/// use outbox_core::forward_store;
/// use outbox_core::store::{ClaimRequest, ClaimStore, ClaimedEvent, Completion, HandOff, Lease};
/// use outbox_core::store::WakeupStream;
/// use outbox_core::{Store, StoreError};
///
/// /// Counts claims, changes nothing else.
/// struct Counting<S> {
///     inner: S,
///     claims: std::sync::atomic::AtomicU64,
/// }
///
/// forward_store!(impl[S: Store] EnqueueStore for Counting<S>, |c| &c.inner);
/// forward_store!(impl[S: Store] InspectStore for Counting<S>, |c| &c.inner);
/// forward_store!(impl[S: Store] RepairStore for Counting<S>, |c| &c.inner);
///
/// #[outbox_core::kit::async_trait]
/// #[deny(clippy::missing_trait_methods)]
/// impl<S: Store> ClaimStore for Counting<S> {
///     async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
///         self.claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         self.inner.claim(request).await
///     }
///     async fn renew_many(
///         &self,
///         leases: Vec<Lease>,
///         extend: std::time::Duration,
///     ) -> Vec<Result<outbox_core::chrono::DateTime<outbox_core::chrono::Utc>, StoreError>> {
///         self.inner.renew_many(leases, extend).await
///     }
///     async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
///         self.inner.complete_many(items).await
///     }
///     async fn complete_and_hand_off(&self, items: &[(Lease, Completion)], next: &ClaimRequest) -> HandOff {
///         self.inner.complete_and_hand_off(items, next).await
///     }
///     async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
///         self.inner.subscribe().await
///     }
///     fn transactions(&self) -> Option<std::sync::Arc<dyn outbox_core::store::Transactions>> {
///         self.inner.transactions()
///     }
/// }
///
/// fn is_a_store<S: Store>(_: &S) {}
/// fn wrap<S: Store>(inner: S) {
///     let counting = Counting { inner, claims: Default::default() };
///     is_a_store(&counting); // a `Store`, so the worker can hold it
/// }
/// ```
#[macro_export]
macro_rules! forward_store {
    (impl[$($g:tt)*] Store for $ty:ty, |$s:ident| $inner:expr) => {
        $crate::forward_store!(impl[$($g)*] ClaimStore for $ty, |$s| $inner);
        $crate::forward_store!(impl[$($g)*] EnqueueStore for $ty, |$s| $inner);
        $crate::forward_store!(impl[$($g)*] InspectStore for $ty, |$s| $inner);
        $crate::forward_store!(impl[$($g)*] RepairStore for $ty, |$s| $inner);
    };
    (impl[$($g:tt)*] ClaimStore for $ty:ty, |$s:ident| $inner:expr) => {
        #[$crate::store::__forward::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<$($g)*> $crate::store::ClaimStore for $ty {
            async fn claim(
                &self,
                request: &$crate::store::ClaimRequest,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::store::ClaimedEvent>, $crate::model::StoreError> {
                let $s = self;
                $crate::store::ClaimStore::claim($inner, request).await
            }
            async fn renew_many(
                &self,
                leases: ::std::vec::Vec<$crate::store::Lease>,
                extend: ::std::time::Duration,
            ) -> ::std::vec::Vec<::std::result::Result<$crate::store::__forward::DateTime<$crate::store::__forward::Utc>, $crate::model::StoreError>> {
                let $s = self;
                $crate::store::ClaimStore::renew_many($inner, leases, extend).await
            }
            async fn complete_many(
                &self,
                items: &[($crate::store::Lease, $crate::store::Completion)],
            ) -> ::std::vec::Vec<::std::result::Result<(), $crate::model::StoreError>> {
                let $s = self;
                $crate::store::ClaimStore::complete_many($inner, items).await
            }
            async fn complete_and_hand_off(
                &self,
                items: &[($crate::store::Lease, $crate::store::Completion)],
                next: &$crate::store::ClaimRequest,
            ) -> $crate::store::HandOff {
                let $s = self;
                $crate::store::ClaimStore::complete_and_hand_off($inner, items, next).await
            }
            async fn subscribe(
                &self,
            ) -> ::std::result::Result<::std::option::Option<$crate::store::WakeupStream>, $crate::model::StoreError> {
                let $s = self;
                $crate::store::ClaimStore::subscribe($inner).await
            }
            fn transactions(
                &self,
            ) -> ::std::option::Option<::std::sync::Arc<dyn $crate::store::Transactions>> {
                let $s = self;
                $crate::store::ClaimStore::transactions($inner)
            }
        }
    };
    (impl[$($g:tt)*] EnqueueStore for $ty:ty, |$s:ident| $inner:expr $(, check |$c:ident, $m:ident| $check:expr)?) => {
        #[$crate::store::__forward::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<$($g)*> $crate::store::EnqueueStore for $ty {
            async fn enqueue_batch(
                &self,
                events: ::std::vec::Vec<$crate::model::NewEvent>,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::store::Enqueued>, $crate::model::StoreError> {
                $( { let $c = self; let $m = "enqueue_batch"; $check?; } )?
                let $s = self;
                $crate::store::EnqueueStore::enqueue_batch($inner, events).await
            }
        }
    };
    (impl[$($g:tt)*] InspectStore for $ty:ty, |$s:ident| $inner:expr $(, check |$c:ident, $m:ident| $check:expr)?) => {
        #[$crate::store::__forward::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<$($g)*> $crate::store::InspectStore for $ty {
            async fn get(
                &self,
                id: $crate::store::__forward::Uuid,
            ) -> ::std::result::Result<::std::option::Option<$crate::model::EventRecord>, $crate::model::StoreError> {
                $( { let $c = self; let $m = "get"; $check?; } )?
                let $s = self;
                $crate::store::InspectStore::get($inner, id).await
            }
            async fn dead_letters(
                &self,
                limit: usize,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::model::EventRecord>, $crate::model::StoreError> {
                $( { let $c = self; let $m = "dead_letters"; $check?; } )?
                let $s = self;
                $crate::store::InspectStore::dead_letters($inner, limit).await
            }
            async fn corrupt_events(
                &self,
                limit: usize,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::model::CorruptEvent>, $crate::model::StoreError> {
                $( { let $c = self; let $m = "corrupt_events"; $check?; } )?
                let $s = self;
                $crate::store::InspectStore::corrupt_events($inner, limit).await
            }
            async fn stats(&self) -> ::std::result::Result<$crate::store::StoreStats, $crate::model::StoreError> {
                $( { let $c = self; let $m = "stats"; $check?; } )?
                let $s = self;
                $crate::store::InspectStore::stats($inner).await
            }
            async fn lag(&self) -> ::std::result::Result<::std::time::Duration, $crate::model::StoreError> {
                $( { let $c = self; let $m = "lag"; $check?; } )?
                let $s = self;
                $crate::store::InspectStore::lag($inner).await
            }
            async fn stats_by_type(
                &self,
            ) -> ::std::result::Result<::std::vec::Vec<$crate::store::TypeStats>, $crate::model::StoreError> {
                $( { let $c = self; let $m = "stats_by_type"; $check?; } )?
                let $s = self;
                $crate::store::InspectStore::stats_by_type($inner).await
            }
            async fn key_head(
                &self,
                key: &str,
            ) -> ::std::result::Result<::std::option::Option<$crate::model::EventRecord>, $crate::model::StoreError> {
                $( { let $c = self; let $m = "key_head"; $check?; } )?
                let $s = self;
                $crate::store::InspectStore::key_head($inner, key).await
            }
            async fn held_back(
                &self,
            ) -> ::std::result::Result<::std::option::Option<$crate::store::HeldBack>, $crate::model::StoreError> {
                $( { let $c = self; let $m = "held_back"; $check?; } )?
                let $s = self;
                $crate::store::InspectStore::held_back($inner).await
            }
        }
    };
    (impl[$($g:tt)*] RepairStore for $ty:ty, |$s:ident| $inner:expr $(, check |$c:ident, $m:ident| $check:expr)?) => {
        #[$crate::store::__forward::async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<$($g)*> $crate::store::RepairStore for $ty {
            async fn requeue_dead(&self, id: $crate::store::__forward::Uuid) -> ::std::result::Result<bool, $crate::model::StoreError> {
                $( { let $c = self; let $m = "requeue_dead"; $check?; } )?
                let $s = self;
                $crate::store::RepairStore::requeue_dead($inner, id).await
            }
            async fn purge(
                &self,
                finished: $crate::store::Finished,
                older_than: $crate::store::__forward::DateTime<$crate::store::__forward::Utc>,
            ) -> ::std::result::Result<u64, $crate::model::StoreError> {
                $( { let $c = self; let $m = "purge"; $check?; } )?
                let $s = self;
                $crate::store::RepairStore::purge($inner, finished, older_than).await
            }
            async fn requeue_corrupt(&self, id: &str) -> ::std::result::Result<bool, $crate::model::StoreError> {
                $( { let $c = self; let $m = "requeue_corrupt"; $check?; } )?
                let $s = self;
                $crate::store::RepairStore::requeue_corrupt($inner, id).await
            }
        }
    };
}
