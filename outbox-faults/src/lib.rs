//! Fault injection against real servers: a PostgreSQL crash (`pg_ctl stop -m immediate`), a Redis
//! crash and restart with append-only-file persistence, and worker processes killed with SIGKILL in
//! a loop while a producer commits (some transactions rolled back on purpose). Every run checks that
//! no committed event is lost, that no rolled-back event is delivered, and that duplicate handler
//! runs stay within the in-flight bound, and prints its figures (`RELIABILITY.md` holds the latest).
//!
//! The tests live in `tests/`; this library holds what they share: the [`Ledger`] of what was
//! committed and what handlers did, and the [`Figures`] a run reports.

/// The repository's README, compiled as a doctest so its example stays true (here, in a crate that
/// is never published, because the README is not part of any published crate).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct RootReadme;

mod proxy;
pub use proxy::StallingProxy;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// The event type every fault test enqueues.
pub const EVENT_TYPE: &str = "FaultEvent";

/// The handlers every event has.
pub const HANDLERS: [&str; 2] = ["mail", "audit"];

/// A third handler of the SIGKILL test's workers, transactional (contract X1): its row commits
/// with its success, so it must never run twice, kills or not.
pub const TRANSACTIONAL_HANDLER: &str = "ledger";

/// Whether attempt `attempt` of `handler` on `event` fails on purpose: the first attempt of about
/// one pair in ten (deterministic, so every process agrees).
pub fn fails_on_purpose(event: Uuid, handler: &str, attempt: u32) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in event.as_bytes().iter().chain(handler.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    attempt == 1 && h % 10 == 0
}

/// What a run committed and rolled back, and every successful handler run.
#[derive(Debug, Clone, Default)]
pub struct Ledger(Arc<Mutex<Entries>>);

#[derive(Debug, Default)]
struct Entries {
    committed: HashSet<Uuid>,
    rolled_back: HashSet<Uuid>,
    in_doubt: HashSet<Uuid>,
    successes: HashMap<(Uuid, &'static str), u32>,
}

impl Ledger {
    fn entries(&self) -> MutexGuard<'_, Entries> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Events whose transaction committed.
    pub fn committed(&self, ids: impl IntoIterator<Item = Uuid>) {
        self.entries().committed.extend(ids);
    }

    /// Events whose transaction was rolled back on purpose.
    pub fn rolled_back(&self, ids: impl IntoIterator<Item = Uuid>) {
        self.entries().rolled_back.extend(ids);
    }

    /// Events whose commit failed with the server going away: committed or not, to be resolved by
    /// reading the store afterwards.
    pub fn in_doubt(&self, ids: impl IntoIterator<Item = Uuid>) {
        self.entries().in_doubt.extend(ids);
    }

    /// Every event rolled back so far.
    pub fn rolled_back_ids(&self) -> Vec<Uuid> {
        self.entries().rolled_back.iter().copied().collect()
    }

    /// The in-doubt events, to resolve.
    pub fn take_in_doubt(&self) -> Vec<Uuid> {
        self.entries().in_doubt.drain().collect()
    }

    /// A handler succeeded for an event (its side effect happened once more).
    pub fn success(&self, event: Uuid, handler: &'static str) {
        *self
            .entries()
            .successes
            .entry((event, handler))
            .or_default() += 1;
    }

    /// How many committed events are delivered so far (every handler succeeded at least once).
    pub fn delivered(&self) -> usize {
        let entries = self.entries();
        entries
            .committed
            .iter()
            .filter(|id| {
                HANDLERS
                    .iter()
                    .all(|h| entries.successes.contains_key(&(**id, *h)))
            })
            .count()
    }

    /// The figures of the run so far.
    pub fn figures(&self, name: &str, in_flight_bound: u64) -> Figures {
        let entries = self.entries();
        let lost = entries
            .committed
            .iter()
            .filter(|id| {
                !HANDLERS
                    .iter()
                    .all(|h| entries.successes.contains_key(&(**id, *h)))
            })
            .count() as u64;
        let rolled_back_delivered = entries
            .successes
            .keys()
            .filter(|(id, _)| entries.rolled_back.contains(id))
            .count() as u64;
        let duplicate_runs = entries
            .successes
            .values()
            .map(|n| u64::from(n.saturating_sub(1)))
            .sum();
        Figures {
            name: name.to_owned(),
            committed: entries.committed.len() as u64,
            rolled_back: entries.rolled_back.len() as u64,
            lost,
            rolled_back_delivered,
            duplicate_runs,
            in_flight_bound,
            recovery: None,
            notes: String::new(),
        }
    }
}

/// What one fault run measured.
#[derive(Debug, Clone)]
pub struct Figures {
    /// The run.
    pub name: String,
    /// Events whose transaction committed.
    pub committed: u64,
    /// Events whose transaction was rolled back.
    pub rolled_back: u64,
    /// Committed events not delivered to every handler.
    pub lost: u64,
    /// Handler successes for rolled-back events (must be 0).
    pub rolled_back_delivered: u64,
    /// Handler successes beyond the first per (event, handler).
    pub duplicate_runs: u64,
    /// The most events that can be in flight at once (workers × in-flight per worker).
    pub in_flight_bound: u64,
    /// From the server's return (or the fault) until outcomes are persisted again.
    pub recovery: Option<Duration>,
    /// Anything else worth reporting.
    pub notes: String,
}

impl Figures {
    /// Adds a note.
    pub fn with_notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = notes.into();
        self
    }

    /// Prints the figures as one line (the test output `RELIABILITY.md` is written from) and
    /// asserts what is promised.
    pub fn check(&self, duplicate_bound: u64) {
        println!(
            "FIGURES {}: committed {}, rolled back {}, lost {}, rolled-back delivered {}, \
             duplicate handler runs {} (bound {duplicate_bound}), recovery {}{}",
            self.name,
            self.committed,
            self.rolled_back,
            self.lost,
            self.rolled_back_delivered,
            self.duplicate_runs,
            self.recovery
                .map_or("—".to_owned(), |r| format!("{:.1} s", r.as_secs_f64())),
            if self.notes.is_empty() {
                String::new()
            } else {
                format!("; {}", self.notes)
            }
        );
        assert!(self.committed > 0, "{}: nothing was committed", self.name);
        assert_eq!(self.lost, 0, "{}: committed events were lost", self.name);
        assert_eq!(
            self.rolled_back_delivered, 0,
            "{}: rolled-back events were delivered",
            self.name
        );
        assert!(
            self.duplicate_runs <= duplicate_bound,
            "{}: {} duplicate handler runs, more than the bound {duplicate_bound}",
            self.name,
            self.duplicate_runs
        );
    }
}

/// A TCP port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(55_432)
}

/// The repository's `scripts/` directory.
pub fn scripts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts")
}

/// The handlers of the in-process fault tests: each records its successes in `ledger` and fails
/// its first attempt on about one event in ten.
pub fn registry(ledger: &Ledger) -> outbox_core::handlers::Registry {
    let mut builder = outbox_core::handlers::Registry::builder();
    for handler in HANDLERS {
        let ledger = ledger.clone();
        builder = builder.handler(outbox_core::Handler::raw(
            EVENT_TYPE,
            handler,
            move |record, ctx| {
                let ledger = ledger.clone();
                async move {
                    if fails_on_purpose(record.id, handler, ctx.attempt) {
                        return Err(outbox_core::HandlerError::retry("failing on purpose"));
                    }
                    ledger.success(record.id, handler);
                    Ok(())
                }
            },
        ));
    }
    match builder.build() {
        Ok(registry) => registry,
        Err(err) => panic!("the fault tests' registry is invalid: {err}"),
    }
}

/// Worker settings for fault runs: short leases and back-offs so recovery is quick to observe.
pub fn worker_config(worker: usize, max_in_flight: usize) -> outbox_core::WorkerConfig {
    outbox_core::WorkerConfig::default()
        .with_worker_id(format!("fault-{worker}"))
        .with_batch_size(50)
        .with_max_in_flight(max_in_flight)
        .with_lease(Duration::from_secs(5))
        .with_poll_interval(Duration::from_millis(100))
        .with_store_backoff_initial(Duration::from_millis(100))
        .with_store_backoff_max(Duration::from_secs(1))
        .with_retry(
            outbox_core::RetryPolicy::default()
                .with_initial_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(1)),
        )
}

/// Waits until `done()` holds, polling every 100 ms, for at most `limit`; returns whether it held.
pub async fn wait_for(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    done()
}
