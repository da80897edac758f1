//! Bad configuration and bad registries are clear errors at startup, before anything runs.

use std::time::Duration;

use outbox_core::handlers::Registry;
use outbox_core::model::RegistryError;
use outbox_core::store::{ClaimStore, EnqueueStore, InspectStore, RepairStore};
use outbox_core::{BuildError, Handler, HandlerError, Worker, WorkerConfig};

#[derive(Clone)]
struct NoStore;

#[outbox_core::kit::async_trait]
impl ClaimStore for NoStore {
    async fn claim(
        &self,
        _: &outbox_core::store::ClaimRequest,
    ) -> Result<Vec<outbox_core::store::ClaimedEvent>, outbox_core::StoreError> {
        Err(outbox_core::StoreError::unavailable("not a real store"))
    }

    async fn subscribe(
        &self,
    ) -> Result<Option<outbox_core::store::WakeupStream>, outbox_core::StoreError> {
        Ok(None)
    }

    async fn renew_many(
        &self,
        leases: Vec<outbox_core::store::Lease>,
        extend: Duration,
    ) -> Vec<Result<chrono::DateTime<chrono::Utc>, outbox_core::StoreError>> {
        outbox_core::kit::each_concurrently(&leases, |lease| self.renew_one(lease, extend)).await
    }

    async fn complete_many(
        &self,
        items: &[(outbox_core::store::Lease, outbox_core::store::Completion)],
    ) -> Vec<Result<(), outbox_core::StoreError>> {
        outbox_core::kit::each_concurrently(items, |(lease, completion)| {
            self.complete_one(lease, completion.clone())
        })
        .await
    }
}

#[outbox_core::kit::async_trait]
impl EnqueueStore for NoStore {
    async fn enqueue_batch(
        &self,
        _: Vec<outbox_core::NewEvent>,
    ) -> Result<Vec<outbox_core::Enqueued>, outbox_core::StoreError> {
        Err(outbox_core::StoreError::unavailable("not a real store"))
    }
}

#[outbox_core::kit::async_trait]
impl InspectStore for NoStore {
    async fn get(
        &self,
        _: uuid::Uuid,
    ) -> Result<Option<outbox_core::EventRecord>, outbox_core::StoreError> {
        Ok(None)
    }

    async fn dead_letters(
        &self,
        _: usize,
    ) -> Result<Vec<outbox_core::EventRecord>, outbox_core::StoreError> {
        Ok(Vec::new())
    }

    async fn corrupt_events(
        &self,
        _: usize,
    ) -> Result<Vec<outbox_core::model::CorruptEvent>, outbox_core::StoreError> {
        Ok(Vec::new())
    }

    async fn stats(&self) -> Result<outbox_core::store::StoreStats, outbox_core::StoreError> {
        Ok(outbox_core::store::StoreStats::default())
    }

    async fn stats_by_type(
        &self,
    ) -> Result<Vec<outbox_core::store::TypeStats>, outbox_core::StoreError> {
        Ok(Vec::new())
    }

    async fn key_head(
        &self,
        _: &str,
    ) -> Result<Option<outbox_core::EventRecord>, outbox_core::StoreError> {
        Ok(None)
    }
}

#[outbox_core::kit::async_trait]
impl RepairStore for NoStore {
    async fn requeue_dead(&self, _: uuid::Uuid) -> Result<bool, outbox_core::StoreError> {
        Ok(false)
    }

    async fn purge(
        &self,
        _: outbox_core::store::Finished,
        _: chrono::DateTime<chrono::Utc>,
    ) -> Result<u64, outbox_core::StoreError> {
        Ok(0)
    }

    async fn requeue_corrupt(&self, _: &str) -> Result<bool, outbox_core::StoreError> {
        Ok(false)
    }
}

impl NoStore {
    /// Renews one lease (C4): an item of `renew_many`.
    async fn renew_one(
        &self,
        lease: &outbox_core::store::Lease,
        _: Duration,
    ) -> Result<chrono::DateTime<chrono::Utc>, outbox_core::StoreError> {
        Err(outbox_core::StoreError::LeaseLost {
            event_id: lease.event_id,
        })
    }

    /// Completes one lease (C3): an item of `complete_many`.
    async fn complete_one(
        &self,
        lease: &outbox_core::store::Lease,
        _: outbox_core::store::Completion,
    ) -> Result<(), outbox_core::StoreError> {
        Err(outbox_core::StoreError::LeaseLost {
            event_id: lease.event_id,
        })
    }
}

#[track_caller]
fn noop(name: &str) -> Handler {
    Handler::raw("E", name, |_r, _c| async { Ok::<_, HandlerError>(()) })
}

#[test]
fn invalid_settings_name_the_setting() {
    let cases: Vec<(WorkerConfig, &str)> = vec![
        (WorkerConfig::default().with_batch_size(0), "batch_size"),
        (
            WorkerConfig::default().with_max_in_flight(0),
            "max_in_flight",
        ),
        (
            WorkerConfig::default().with_lease(Duration::from_millis(1)),
            "lease",
        ),
        (
            WorkerConfig::default().with_renew_interval(Duration::from_secs(60)),
            "renew_interval",
        ),
        (
            WorkerConfig::default().with_poll_interval(Duration::ZERO),
            "poll_interval",
        ),
        (
            WorkerConfig::default().with_handler_timeout(Duration::ZERO),
            "handler_timeout",
        ),
        (
            WorkerConfig::default().with_worker_id(" ".into()),
            "worker_id",
        ),
        (
            WorkerConfig::default()
                .with_retry(outbox_core::RetryPolicy::default().with_jitter(2.0)),
            "retry.jitter",
        ),
        // Huge values that would overflow a timer or a clock.
        (WorkerConfig::default().with_lease(Duration::MAX), "lease"),
        (
            WorkerConfig::default().with_poll_interval(Duration::MAX),
            "poll_interval",
        ),
        (
            WorkerConfig::default().with_handler_timeout(Duration::MAX),
            "handler_timeout",
        ),
        (
            WorkerConfig::default().with_shutdown_grace(Duration::MAX),
            "shutdown_grace",
        ),
        (
            WorkerConfig::default().with_store_backoff_max(Duration::MAX),
            "store_backoff_max",
        ),
        (
            WorkerConfig::default().with_missing_handler_grace(Duration::MAX),
            "missing_handler_grace",
        ),
        (
            WorkerConfig::default().with_max_in_flight(usize::MAX),
            "max_in_flight",
        ),
        (
            WorkerConfig::default()
                .with_retry(outbox_core::RetryPolicy::default().with_max_delay(Duration::MAX)),
            "retry.max_delay",
        ),
        // Inconsistent: a renewal no sooner than the lease would be compromised.
        (
            WorkerConfig::default()
                .with_lease(Duration::from_secs(10))
                .with_renew_interval(Duration::from_secs(9)),
            "renew_interval",
        ),
    ];
    for (config, field) in cases {
        let err = Worker::builder(NoStore)
            .registry(Registry::default())
            .config(config)
            .build()
            .unwrap_err();
        assert!(
            matches!(&err, BuildError::Config(c) if c.field == field),
            "{field}: {err}"
        );
        assert!(err.to_string().contains(field), "{err}");
    }
}

#[test]
fn duplicate_handler_names_are_a_startup_error_naming_both() {
    let err = Registry::builder()
        .handler(noop("dup"))
        .handler(noop("dup"))
        .build()
        .unwrap_err();
    let RegistryError::DuplicateHandler { first, second, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(
        first.contains("worker_build.rs") && second.contains("worker_build.rs") && first != second,
        "{err}"
    );
    assert!(
        err.to_string().contains("give one a distinct `name`"),
        "{err}"
    );
}

// `#[handler]` refuses this at compile time (tests/ui/fail/event_mismatch.rs); a registration
// made by hand is still checked when the registry is built.
fn call_mismatched(
    _record: std::sync::Arc<outbox_core::EventRecord>,
    _ctx: outbox_core::HandlerContext,
) -> outbox_core::handlers::HandlerFuture {
    Box::pin(async { Ok(None) })
}
fn declared_mismatched() -> Option<&'static str> {
    Some("Declared")
}
fn no_state() -> Vec<outbox_core::handlers::StateRequirement> {
    Vec::new()
}
fn no_transaction() -> Option<outbox_core::store::TransactionType> {
    None
}
outbox_core::__private::inventory::submit! {
    outbox_core::__private::HandlerRegistration {
        event_type: "SomethingElse",
        name: "mismatched",
        max_attempts: None,
        timeout: None,
        location: concat!(file!(), ":", line!()),
        call: call_mismatched,
        declared_event_type: declared_mismatched,
        renamed_from: None,
        required_state: no_state,
        transaction: no_transaction,
    }
}

#[test]
fn a_typed_handler_registered_for_another_event_type_is_refused() {
    let err = Registry::builder()
        .with_registered_for(&["SomethingElse"])
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, RegistryError::EventTypeMismatch { registered, declared, .. } if registered == "SomethingElse" && declared == "Declared"),
        "{err:?}"
    );
    let err = Worker::builder(NoStore).build().unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::Registry(RegistryError::EventTypeMismatch { .. })
        ),
        "the global registry is checked at build: {err}"
    );
}

#[tokio::test]
async fn a_worker_on_an_unreachable_store_keeps_running_and_stops_on_request() {
    let worker = Worker::builder(NoStore)
        .registry(Registry::default())
        .config(WorkerConfig::default().with_store_backoff_initial(Duration::from_millis(5)))
        .build()
        .unwrap()
        .start();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!worker.is_finished());
    let report = worker.shutdown().await;
    assert!(report.metrics.store_errors >= 2, "{report:?}");
}

/// A transaction type no store here gives.
struct OtherTx;
impl outbox_core::store::StoreTransaction for OtherTx {}

#[test]
fn a_transactional_handler_needs_a_store_with_its_transactions() {
    let handler = Handler::transactional("Paid", "record", |_record, _tx: &mut OtherTx, _ctx| {
        Box::pin(async { Ok::<_, HandlerError>(()) })
    });
    let registry = Registry::builder()
        .handler(handler)
        .build()
        .expect("a registry");
    let Err(err) = Worker::builder(NoStore).registry(registry).build() else {
        panic!("a store without transactions is refused");
    };
    let message = err.to_string();
    assert!(
        matches!(err, BuildError::TransactionUnavailable { .. }),
        "{message}"
    );
    assert!(
        message.contains("`record`")
            && message.contains("OtherTx")
            && message.contains("no transactions"),
        "{message}"
    );
}

/// A handler that needs shared state (`requires_state`) the worker was not given is a startup
/// error naming the handler and the type; given the state, the worker builds.
#[test]
fn a_handler_needs_the_state_it_requires() {
    struct Mailer;
    let registry = || {
        Registry::builder()
            .handler(
                Handler::raw("Invited", "send", |_record, _ctx| async {
                    Ok::<_, HandlerError>(())
                })
                .requires_state::<Mailer>(),
            )
            .build()
            .expect("a registry")
    };
    let Err(err) = Worker::builder(NoStore).registry(registry()).build() else {
        panic!("a missing state is refused");
    };
    let message = err.to_string();
    assert!(matches!(err, BuildError::MissingState { .. }), "{message}");
    assert!(
        message.contains("`send`") && message.contains("Mailer"),
        "{message}"
    );
    Worker::builder(NoStore)
        .registry(registry())
        .state(Mailer)
        .build()
        .expect("with its state the worker builds");
}

/// Declared (and so known to startup) but handled by no handler here: only its declaration matters.
#[derive(serde::Serialize, serde::Deserialize, outbox_core::Event)]
#[outbox(name = "worker_build.Declared")]
#[expect(dead_code, reason = "declared for the coverage check, never built")]
struct Declared {}

/// With `strict_coverage`, an event type declared through `Event` that has no handler refuses the
/// build, naming it (H6); without it, the worker builds (and warns).
#[test]
fn strict_coverage_refuses_a_declared_type_without_a_handler() {
    let registry = || {
        Registry::builder()
            .handler(Handler::raw("Other", "other", |_record, _ctx| async {
                Ok::<_, HandlerError>(())
            }))
            .build()
            .expect("a registry")
    };
    let Err(err) = Worker::builder(NoStore)
        .registry(registry())
        .config(WorkerConfig::default().with_strict_coverage(true))
        .build()
    else {
        panic!("strict coverage refuses a declared type without a handler");
    };
    let message = err.to_string();
    assert!(
        matches!(err, BuildError::UnhandledEventTypes { .. })
            && message.contains("worker_build.Declared"),
        "{message}"
    );
    Worker::builder(NoStore)
        .registry(registry())
        .build()
        .expect("without strict coverage the worker builds");
}
