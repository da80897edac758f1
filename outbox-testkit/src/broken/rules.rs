//! [`Breaking`]: any store with one rule of the store contract broken at one entry point — the
//! kind of mistake a store author makes (the batch form but not the single one, the second attempt
//! but not the first, ties but not distinct timestamps). Each [`Break`] names the contract clause
//! it breaks; [`suite_catches`] runs that clause's conformance checks and reports which one caught
//! it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use outbox_core::model::{CorruptEvent, HandlerResults};
use outbox_core::store::{
    ClaimRequest, ClaimedEvent, Completion, Finished, HandOff, Lease, StoreStats, Transactions,
    TypeStats, WakeupStream,
};
use outbox_core::store::{ClaimStore, EnqueueStore, InspectStore, RepairStore};
use outbox_core::{Enqueued, EventRecord, EventStatus, NewEvent, Store, StoreError};
use uuid::Uuid;

/// One rule of the store contract, broken at one entry point. Grouped by the class of rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Break {
    // Batch forms.
    /// `enqueue_batch` checks idempotency keys only within the batch, not against stored events.
    BatchSkipsStoredKeys,
    /// `enqueue_batch` reports a duplicate under the new item's id instead of the first event's.
    BatchDuplicateReportsOwnId,
    /// `enqueue_batch` drops each item's schedule (`available_at`).
    BatchDropsSchedule,
    /// `enqueue_batch` trims whitespace from idempotency keys.
    BatchKeysTrimmed,
    /// `enqueue_batch` drops each item's trace context.
    BatchDropsTraceparent,
    /// `complete_many` applies its last item whatever the item's lease token.
    BatchCompletionUnfencedLast,
    /// `complete_many` applies the first item's retry delay to every item.
    BatchCompletionFirstRetryDelay,
    /// `complete_many` stores the first item's handler results for every item.
    BatchCompletionSharesResults,
    /// `complete_many` returns its per-item results out of order (failures last).
    BatchResultsOutOfOrder,
    /// `renew_many` renews its first lease whatever its token.
    RenewManyUnfencedFirst,
    /// `complete_and_hand_off` leaves refused items out of its results.
    HandOffDropsRefusals,
    // What a record reads back.
    /// `complete` keeps the attempt count of the claim instead of the one sent.
    CompletionKeepsClaimAttempts,
    /// `dead_letters` reads events without their correlation id and ordering key.
    DeadLettersDropKeys,
    /// `get` reads events without their correlation id.
    GetDropsCorrelation,
    /// Payload integers beyond 2^53 go through a float (as a JavaScript or BSON double would).
    LargeIntegersAsFloats,
    /// A claim of a later attempt reads the event without its handler results.
    SecondClaimForgetsResults,
    /// Dead events read back without `processed_at`.
    ProcessedAtUnsetForDead,
    // Order, including ties.
    /// Events created at one instant (one batch) are claimed in reverse enqueue order.
    TiesReversed,
    /// `claim(n)` returns up to `n + 1` events.
    ClaimOneTooMany,
    /// `dead_letters` lists newest first.
    DeadLettersNewestFirst,
    /// `dead_letters` returns one more than its limit.
    DeadLettersIgnoreLimit,
    // Counters of `stats` and the lag.
    /// `stats` does not count dead events.
    DeadNotCounted,
    /// `stats` counts an event whose lease expired as leased, not due.
    ExpiredLeasesCountedLeased,
    /// `stats` counts an event backing off as due.
    BackoffCountedDue,
    /// The lag is measured from the oldest due event's creation, not from when it became due.
    LagFromCreation,
    /// `stats_by_type` does not count dead events.
    TypeStatsDeadUncounted,
    // Repair operations.
    /// `requeue_dead` leaves failed handlers' attempt counts as they were.
    RequeueKeepsFailedAttempts,
    /// `purge_processed` selects by creation time instead of `processed_at`.
    PurgeProcessedByCreation,
    /// `purge_dead` selects by creation time instead of when the event died.
    PurgeDeadByCreation,
    /// `requeue_dead` reports success for an event that is not dead.
    RequeueAcceptsAnyStatus,
    // Idempotency keys.
    /// `enqueue` compares idempotency keys without regard to case.
    KeysCaseInsensitive,
    /// A key is free again once its event was processed or died (while the event is still
    /// stored).
    KeyFreedWhenFinished,
    // Lease tokens.
    /// A claim's token is derived from the event id and its attempt number.
    TokenFromAttempt,
    /// Every claim of an event hands out the token of its first claim.
    TokenKeptAcrossClaims,
    /// The lease token is the event id.
    TokenIsEventId,
}

impl Break {
    /// Every break, in declaration order.
    pub const ALL: &'static [Break] = &[
        Self::BatchSkipsStoredKeys,
        Self::BatchDuplicateReportsOwnId,
        Self::BatchDropsSchedule,
        Self::BatchKeysTrimmed,
        Self::BatchDropsTraceparent,
        Self::BatchCompletionUnfencedLast,
        Self::BatchCompletionFirstRetryDelay,
        Self::BatchCompletionSharesResults,
        Self::BatchResultsOutOfOrder,
        Self::RenewManyUnfencedFirst,
        Self::HandOffDropsRefusals,
        Self::CompletionKeepsClaimAttempts,
        Self::DeadLettersDropKeys,
        Self::GetDropsCorrelation,
        Self::LargeIntegersAsFloats,
        Self::SecondClaimForgetsResults,
        Self::ProcessedAtUnsetForDead,
        Self::TiesReversed,
        Self::ClaimOneTooMany,
        Self::DeadLettersNewestFirst,
        Self::DeadLettersIgnoreLimit,
        Self::DeadNotCounted,
        Self::ExpiredLeasesCountedLeased,
        Self::BackoffCountedDue,
        Self::LagFromCreation,
        Self::TypeStatsDeadUncounted,
        Self::RequeueKeepsFailedAttempts,
        Self::PurgeProcessedByCreation,
        Self::PurgeDeadByCreation,
        Self::RequeueAcceptsAnyStatus,
        Self::KeysCaseInsensitive,
        Self::KeyFreedWhenFinished,
        Self::TokenFromAttempt,
        Self::TokenKeptAcrossClaims,
        Self::TokenIsEventId,
    ];

    /// The contract clause it breaks (`"C2"`…`"C9"`); the suite's functions for that clause
    /// start with its lower-case form.
    ///
    /// ```
    /// use outbox_testkit::broken::Break;
    /// assert_eq!(Break::KeysCaseInsensitive.rule(), "C6");
    /// ```
    pub fn rule(self) -> &'static str {
        match self {
            Self::BatchDropsSchedule
            | Self::BatchDropsTraceparent
            | Self::GetDropsCorrelation
            | Self::LargeIntegersAsFloats
            | Self::TiesReversed
            | Self::ClaimOneTooMany => "C2",
            Self::BatchCompletionUnfencedLast
            | Self::BatchCompletionFirstRetryDelay
            | Self::BatchCompletionSharesResults
            | Self::BatchResultsOutOfOrder
            | Self::HandOffDropsRefusals
            | Self::CompletionKeepsClaimAttempts
            | Self::SecondClaimForgetsResults
            | Self::TokenFromAttempt
            | Self::TokenKeptAcrossClaims
            | Self::TokenIsEventId => "C3",
            Self::RenewManyUnfencedFirst => "C4",
            Self::BatchSkipsStoredKeys
            | Self::BatchDuplicateReportsOwnId
            | Self::BatchKeysTrimmed
            | Self::KeysCaseInsensitive
            | Self::KeyFreedWhenFinished => "C6",
            Self::DeadLettersDropKeys
            | Self::ProcessedAtUnsetForDead
            | Self::DeadLettersNewestFirst
            | Self::DeadLettersIgnoreLimit
            | Self::RequeueKeepsFailedAttempts
            | Self::PurgeProcessedByCreation
            | Self::PurgeDeadByCreation
            | Self::RequeueAcceptsAnyStatus => "C7",
            Self::DeadNotCounted
            | Self::ExpiredLeasesCountedLeased
            | Self::BackoffCountedDue
            | Self::LagFromCreation
            | Self::TypeStatsDeadUncounted => "C9",
        }
    }

    /// The class of rule it belongs to, as `outbox-testkit/README.md` lists them.
    pub fn class(self) -> &'static str {
        match self {
            Self::BatchSkipsStoredKeys
            | Self::BatchDuplicateReportsOwnId
            | Self::BatchDropsSchedule
            | Self::BatchKeysTrimmed
            | Self::BatchDropsTraceparent
            | Self::BatchCompletionUnfencedLast
            | Self::BatchCompletionFirstRetryDelay
            | Self::BatchCompletionSharesResults
            | Self::BatchResultsOutOfOrder
            | Self::RenewManyUnfencedFirst
            | Self::HandOffDropsRefusals => "batch forms",
            Self::CompletionKeepsClaimAttempts
            | Self::DeadLettersDropKeys
            | Self::GetDropsCorrelation
            | Self::LargeIntegersAsFloats
            | Self::SecondClaimForgetsResults
            | Self::ProcessedAtUnsetForDead => "what a record reads back",
            Self::TiesReversed
            | Self::ClaimOneTooMany
            | Self::DeadLettersNewestFirst
            | Self::DeadLettersIgnoreLimit => "order, including ties",
            Self::DeadNotCounted
            | Self::ExpiredLeasesCountedLeased
            | Self::BackoffCountedDue
            | Self::LagFromCreation
            | Self::TypeStatsDeadUncounted => "counters and lag",
            Self::RequeueKeepsFailedAttempts
            | Self::PurgeProcessedByCreation
            | Self::PurgeDeadByCreation
            | Self::RequeueAcceptsAnyStatus => "repair operations",
            Self::KeysCaseInsensitive | Self::KeyFreedWhenFinished => "idempotency keys",
            Self::TokenFromAttempt | Self::TokenKeptAcrossClaims | Self::TokenIsEventId => {
                "lease tokens"
            }
        }
    }
}

/// What a [`Breaking`] store remembers to get its rule wrong the way a real store would.
#[derive(Debug, Default)]
struct Memo {
    /// Every event stored through the wrapper.
    events: Vec<Uuid>,
    /// Idempotency key → the event stored with it.
    keys: HashMap<String, Uuid>,
    /// Per event: the token the wrapper handed out and the inner store's token behind it.
    tokens: HashMap<Uuid, (Uuid, Uuid)>,
    /// Handler results of dead events as they were before a re-queue.
    requeued: HashMap<Uuid, HandlerResults>,
}

/// `inner` with one [`Break`]; everything else is the inner store's.
///
/// ```
/// use outbox_testkit::MemoryStore;
/// use outbox_testkit::broken::{Break, Breaking};
/// let store = Breaking::new(MemoryStore::new(), Break::TiesReversed);
/// assert_eq!(store.flaw(), Break::TiesReversed);
/// ```
#[derive(Debug, Clone)]
pub struct Breaking<S> {
    pub(crate) inner: S,
    flaw: Break,
    memo: Arc<Mutex<Memo>>,
}

impl<S> Breaking<S> {
    /// `inner` with `flaw`.
    pub fn new(inner: S, flaw: Break) -> Self {
        Self {
            inner,
            flaw,
            memo: Arc::default(),
        }
    }

    /// Its flaw.
    pub fn flaw(&self) -> Break {
        self.flaw
    }

    /// The store it wraps.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn memo(&self) -> MutexGuard<'_, Memo> {
        self.memo.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Integers beyond 2^53 as the nearest double.
fn through_float(value: &mut serde_json::Value) {
    const EXACT: u64 = 1 << 53;
    match value {
        serde_json::Value::Number(n) => {
            let lossy = n.as_u64().is_some_and(|u| u > EXACT)
                || n.as_i64().is_some_and(|i| i.unsigned_abs() > EXACT);
            if let (true, Some(f)) = (lossy, n.as_f64()) {
                *value = serde_json::Value::from(f);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(through_float),
        serde_json::Value::Object(map) => map.values_mut().for_each(through_float),
        _ => {}
    }
}

impl<S: Store + Clone> Breaking<S> {
    /// The token handed out for `claimed` under a token flaw (recorded with the inner one).
    fn hand_out(&self, claimed: &mut ClaimedEvent) {
        let id = claimed.record.id;
        let inner = claimed.lease.token;
        let mut memo = self.memo();
        let outer = match self.flaw {
            Break::TokenFromAttempt => {
                Uuid::from_u128(id.as_u128() ^ u128::from(claimed.record.attempts).rotate_left(64))
            }
            Break::TokenKeptAcrossClaims => memo.tokens.get(&id).map_or(inner, |t| t.0),
            Break::TokenIsEventId => id,
            _ => return,
        };
        memo.tokens.insert(id, (outer, inner));
        claimed.lease.token = outer;
        claimed.record.lease_token = Some(outer);
    }

    /// The inner store's lease behind a lease the wrapper handed out.
    fn inner_lease(&self, lease: &Lease) -> Lease {
        match self.memo().tokens.get(&lease.event_id) {
            Some((outer, inner)) if *outer == lease.token => Lease {
                event_id: lease.event_id,
                token: *inner,
            },
            _ => *lease,
        }
    }

    /// The lease the inner store holds for `id` now, whatever the caller's token.
    async fn current_lease(&self, id: Uuid) -> Lease {
        let token = match self.inner.get(id).await {
            Ok(Some(record)) => record.lease_token,
            _ => None,
        };
        Lease {
            event_id: id,
            token: token.unwrap_or_else(Uuid::nil),
        }
    }

    /// A record as the broken store reads it back.
    fn doctor(&self, record: &mut EventRecord) {
        let memo = self.memo();
        if let (Some((outer, inner)), Some(token)) =
            (memo.tokens.get(&record.id), record.lease_token)
        {
            if token == *inner {
                record.lease_token = Some(*outer);
            }
        }
        match self.flaw {
            Break::ProcessedAtUnsetForDead if record.status == EventStatus::Dead => {
                record.processed_at = None;
            }
            Break::RequeueKeepsFailedAttempts if record.status == EventStatus::Pending => {
                if let Some(before) = memo.requeued.get(&record.id) {
                    for (name, state) in &mut record.handler_results {
                        if let (None, Some(old)) = (state.succeeded_at, before.get(name)) {
                            state.attempts = old.attempts;
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Events tracked by the wrapper, as the inner store reads them now.
    async fn tracked(&self) -> Vec<EventRecord> {
        let ids = self.memo().events.clone();
        let mut out = Vec::new();
        for id in ids {
            if let Ok(Some(record)) = self.inner.get(id).await {
                out.push(record);
            }
        }
        out
    }

    /// The lag measured from the creation of the oldest due event.
    async fn lag_from_creation(&self) -> Option<Duration> {
        let now = Utc::now();
        self.tracked()
            .await
            .into_iter()
            .filter(|r| {
                r.status == EventStatus::Pending
                    && r.locked_until.is_none_or(|t| t <= now)
                    && r.available_at <= now
                    && r.backoff_until.is_none_or(|t| t <= now)
            })
            .filter_map(|r| (now - r.created_at).to_std().ok())
            .max()
    }

    /// A purge of `finished` events that selects by creation time.
    async fn purge_by_creation(
        &self,
        finished: Finished,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let mut cut = older_than;
        for record in self.tracked().await {
            if record.status == finished.status() && record.created_at < older_than {
                if let Some(at) = record.processed_at {
                    cut = cut.max(at + chrono::Duration::milliseconds(1));
                }
            }
        }
        self.inner.purge(finished, cut).await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: Store + Clone> ClaimStore for Breaking<S> {
    async fn claim(&self, request: &ClaimRequest) -> Result<Vec<ClaimedEvent>, StoreError> {
        let mut request = request.clone();
        if self.flaw == Break::ClaimOneTooMany && request.limit >= 2 {
            request.limit += 1;
        }
        let mut claimed = self.inner.claim(&request).await?;
        if self.flaw == Break::TiesReversed {
            for tie in claimed.chunk_by_mut(|a, b| a.record.created_at == b.record.created_at) {
                tie.reverse();
            }
        }
        for c in &mut claimed {
            self.hand_out(c);
            self.doctor(&mut c.record);
            if self.flaw == Break::SecondClaimForgetsResults && c.record.attempts >= 2 {
                c.record.handler_results.clear();
            }
        }
        Ok(claimed)
    }

    async fn renew_many(
        &self,
        leases: Vec<Lease>,
        extend: Duration,
    ) -> Vec<Result<DateTime<Utc>, StoreError>> {
        let mut inner: Vec<Lease> = leases.iter().map(|l| self.inner_lease(l)).collect();
        if self.flaw == Break::RenewManyUnfencedFirst {
            if let Some(first) = inner.first_mut() {
                *first = self.current_lease(first.event_id).await;
            }
        }
        self.inner.renew_many(inner, extend).await
    }

    async fn complete_many(&self, items: &[(Lease, Completion)]) -> Vec<Result<(), StoreError>> {
        let mut inner: Vec<(Lease, Completion)> = items
            .iter()
            .map(|(l, c)| (self.inner_lease(l), c.clone()))
            .collect();
        if inner.len() >= 2 {
            let first = inner[0].1.clone();
            match self.flaw {
                Break::BatchCompletionUnfencedLast => {
                    if let Some(last) = inner.last_mut() {
                        last.0 = self.current_lease(last.0.event_id).await;
                    }
                }
                Break::BatchCompletionFirstRetryDelay => {
                    for (_, c) in &mut inner {
                        c.retry_delay = first.retry_delay;
                    }
                }
                Break::BatchCompletionSharesResults => {
                    for (_, c) in &mut inner {
                        c.handler_results = first.handler_results.clone();
                    }
                }
                _ => {}
            }
        }
        if self.flaw == Break::CompletionKeepsClaimAttempts {
            for (lease, completion) in &mut inner {
                if let Ok(Some(record)) = self.inner.get(lease.event_id).await {
                    completion.attempts = record.attempts;
                }
            }
        }
        let mut results = self.inner.complete_many(&inner).await;
        if self.flaw == Break::BatchResultsOutOfOrder && results.len() >= 2 {
            results.sort_by_key(Result::is_err);
        }
        results
    }

    async fn complete_and_hand_off(
        &self,
        items: &[(Lease, Completion)],
        next: &ClaimRequest,
    ) -> HandOff {
        let inner: Vec<(Lease, Completion)> = items
            .iter()
            .map(|(l, c)| (self.inner_lease(l), c.clone()))
            .collect();
        let mut handed = self.inner.complete_and_hand_off(&inner, next).await;
        if self.flaw == Break::HandOffDropsRefusals {
            handed.results.retain(Result::is_ok);
        }
        for c in &mut handed.next {
            self.hand_out(c);
            self.doctor(&mut c.record);
        }
        handed
    }

    async fn subscribe(&self) -> Result<Option<WakeupStream>, StoreError> {
        self.inner.subscribe().await
    }

    fn transactions(&self) -> Option<Arc<dyn Transactions>> {
        self.inner.transactions()
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: Store + Clone> EnqueueStore for Breaking<S> {
    async fn enqueue_batch(&self, mut events: Vec<NewEvent>) -> Result<Vec<Enqueued>, StoreError> {
        let batch = events.len() >= 2;
        for event in &mut events {
            let key = event.idempotency_key.clone();
            match self.flaw {
                Break::KeysCaseInsensitive if !batch => {
                    event.idempotency_key = key.map(|k| k.to_lowercase());
                }
                Break::BatchKeysTrimmed if batch => {
                    event.idempotency_key = key.map(|k| k.trim().to_owned());
                }
                Break::BatchSkipsStoredKeys
                    if batch
                        && key
                            .as_ref()
                            .is_some_and(|k| self.memo().keys.contains_key(k)) =>
                {
                    event.idempotency_key = None;
                }
                Break::BatchDropsSchedule if batch => event.available_at = None,
                Break::BatchDropsTraceparent if batch => event.traceparent = None,
                Break::LargeIntegersAsFloats => through_float(&mut event.payload),
                Break::KeyFreedWhenFinished => {
                    let holder = key.and_then(|k| self.memo().keys.get(&k).copied());
                    if let Some(holder) = holder {
                        let finished = matches!(
                            self.inner.get(holder).await,
                            Ok(Some(r)) if r.status != EventStatus::Pending
                        );
                        if finished {
                            event.idempotency_key = None;
                        }
                    }
                }
                _ => {}
            }
        }
        let sent: Vec<(Uuid, Option<String>)> = events
            .iter()
            .map(|e| (e.id, e.idempotency_key.clone()))
            .collect();
        let mut results = self.inner.enqueue_batch(events).await?;
        let mut memo = self.memo();
        for (result, (id, key)) in results.iter_mut().zip(sent) {
            if result.duplicate {
                if self.flaw == Break::BatchDuplicateReportsOwnId && batch {
                    result.id = id;
                }
                continue;
            }
            memo.events.push(result.id);
            if let Some(key) = key {
                memo.keys.insert(key, result.id);
            }
        }
        Ok(results)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: Store + Clone> InspectStore for Breaking<S> {
    async fn get(&self, id: Uuid) -> Result<Option<EventRecord>, StoreError> {
        let mut record = self.inner.get(id).await?;
        if let Some(r) = &mut record {
            self.doctor(r);
            if self.flaw == Break::GetDropsCorrelation {
                r.correlation_id = None;
            }
        }
        Ok(record)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<EventRecord>, StoreError> {
        let limit = match self.flaw {
            Break::DeadLettersIgnoreLimit => limit.saturating_add(1),
            _ => limit,
        };
        let mut letters = self.inner.dead_letters(limit).await?;
        for r in &mut letters {
            self.doctor(r);
            if self.flaw == Break::DeadLettersDropKeys {
                r.correlation_id = None;
                r.ordering_key = None;
            }
        }
        if self.flaw == Break::DeadLettersNewestFirst {
            letters.reverse();
        }
        Ok(letters)
    }

    async fn corrupt_events(&self, limit: usize) -> Result<Vec<CorruptEvent>, StoreError> {
        self.inner.corrupt_events(limit).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let mut stats = self.inner.stats().await?;
        let now = Utc::now();
        match self.flaw {
            Break::DeadNotCounted => stats.dead = 0,
            Break::ExpiredLeasesCountedLeased => {
                for r in self.tracked().await {
                    let expired = r.status == EventStatus::Pending
                        && r.lease_token.is_some()
                        && r.locked_until.is_some_and(|t| t <= now);
                    if expired {
                        stats.due = stats.due.saturating_sub(1);
                        stats.leased += 1;
                    }
                }
            }
            Break::BackoffCountedDue => {
                for r in self.tracked().await {
                    let backing_off = r.status == EventStatus::Pending
                        && r.locked_until.is_none_or(|t| t <= now)
                        && r.backoff_until.is_some_and(|t| t > now);
                    if backing_off {
                        stats.due += 1;
                    }
                }
            }
            Break::LagFromCreation => {
                if let Some(lag) = self.lag_from_creation().await {
                    stats.oldest_due_age = lag;
                }
            }
            _ => {}
        }
        Ok(stats)
    }

    async fn lag(&self) -> Result<Duration, StoreError> {
        match self.flaw {
            Break::LagFromCreation => match self.lag_from_creation().await {
                Some(lag) => Ok(lag),
                None => self.inner.lag().await,
            },
            _ => self.inner.lag().await,
        }
    }

    async fn stats_by_type(&self) -> Result<Vec<TypeStats>, StoreError> {
        let mut rows = self.inner.stats_by_type().await?;
        if self.flaw == Break::TypeStatsDeadUncounted {
            for row in &mut rows {
                row.dead = 0;
            }
        }
        Ok(rows)
    }

    async fn key_head(&self, key: &str) -> Result<Option<EventRecord>, StoreError> {
        let mut head = self.inner.key_head(key).await?;
        if let Some(r) = &mut head {
            self.doctor(r);
        }
        Ok(head)
    }

    async fn held_back(&self) -> Result<Option<outbox_core::store::HeldBack>, StoreError> {
        self.inner.held_back().await
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: Store + Clone> RepairStore for Breaking<S> {
    async fn requeue_dead(&self, id: Uuid) -> Result<bool, StoreError> {
        if self.flaw == Break::RequeueKeepsFailedAttempts {
            if let Ok(Some(record)) = self.inner.get(id).await {
                self.memo().requeued.insert(id, record.handler_results);
            }
        }
        let requeued = self.inner.requeue_dead(id).await?;
        Ok(requeued || self.flaw == Break::RequeueAcceptsAnyStatus)
    }

    async fn purge(
        &self,
        finished: Finished,
        older_than: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        match (self.flaw, finished) {
            (Break::PurgeDeadByCreation, Finished::Dead)
            | (Break::PurgeProcessedByCreation, Finished::Processed) => {
                self.purge_by_creation(finished, older_than).await
            }
            _ => self.inner.purge(finished, older_than).await,
        }
    }

    async fn requeue_corrupt(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.requeue_corrupt(id).await
    }
}
