//! Worker settings with sensible defaults, validated by [`WorkerConfig::validate`].

use std::time::Duration;

use crate::model::error::ConfigError;
use crate::runtime::fold::NoHandlerPolicy;
use crate::runtime::retry::RetryPolicy;

/// How a worker claims, runs and retries.
///
/// ```
/// use outbox_core::WorkerConfig;
/// use std::time::Duration;
///
/// let config = WorkerConfig::default()
///     .with_batch_size(50)
///     .with_lease(Duration::from_secs(60));
/// assert!(config.validate().is_ok());
/// assert!(WorkerConfig::default().with_batch_size(0).validate().is_err());
/// ```
///
/// | setting | default | |
/// |---|---|---|
/// | `worker_id` | `worker-<pid>-<random>` | recorded as `locked_by` on claimed events |
/// | `batch_size` | 32 | events per claim |
/// | `max_in_flight` | 64 | events processed at once |
/// | `lease` | `30s` | lease length of a claim |
/// | `renew_interval` | a third of `lease` | how often held leases are renewed |
/// | `poll_interval` | `500ms` | how often to poll when no wake-up arrives |
/// | `handler_timeout` | `30s` | timeout of a handler without its own |
/// | `shutdown_grace` | `10s` | how long handlers may finish after shutdown begins |
/// | `retry` | 10 attempts, `1s` doubling to `10m`, jitter 0.5 | see [`RetryPolicy`] |
/// | `no_handler` | back-off `5s` to `10m` | see [`NoHandlerPolicy`] |
/// | `missing_handler_grace` | `1h` | how long a handler named in results may be missing |
/// | `strict_coverage` | `false` | refuse to build when a declared event type has no handler |
/// | `store_backoff_initial` / `store_backoff_max` | `100ms` / `10s` | pauses after store failures |
/// | `use_wakeups` | `true` | subscribe to the store's wake-ups when it has them |
/// | `hand_off_keys` | `true` | take the next event of an ordering key from the completion that ends its predecessor, on stores that offer it |
///
/// It deserializes from configuration (every field optional, defaults as above; durations as
/// strings such as `"250ms"`, `"30s"`, `"5m"`; unknown fields are refused):
///
/// ```
/// let config: outbox_core::WorkerConfig = outbox_core::serde_json::from_str(r#"{
///     "batch_size": 100,
///     "lease": "1m",
///     "retry": { "max_attempts": 5, "initial_delay": "2s" },
///     "no_handler": { "leave_pending": "30s" }
/// }"#)?;
/// assert_eq!(config.batch_size, 100);
/// assert_eq!(config.lease, std::time::Duration::from_secs(60));
/// assert_eq!(config.max_in_flight, 64); // the default
/// assert_eq!(config.retry.max_attempts, 5);
/// config.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct WorkerConfig {
    /// Recorded as `locked_by` on claimed events.
    pub worker_id: String,
    /// Events per claim.
    pub batch_size: usize,
    /// Events processed at once.
    pub max_in_flight: usize,
    /// Lease length of a claim.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// How often held leases are renewed while handlers run (default: a third of the lease).
    #[serde(with = "humantime_serde")]
    pub renew_interval: Option<Duration>,
    /// How often to poll when no wake-up arrives.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Timeout of a handler without its own.
    #[serde(with = "humantime_serde")]
    pub handler_timeout: Duration,
    /// How long in-flight handlers may finish after shutdown begins.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Retry and back-off of failed handlers.
    pub retry: RetryPolicy,
    /// What to do with events whose type has no handler in this worker.
    pub no_handler: NoHandlerPolicy,
    /// How long a handler recorded in an event's results may be missing from every worker that
    /// claims the event before it gives up (the event then becomes dead, naming it).
    #[serde(with = "humantime_serde")]
    pub missing_handler_grace: Duration,
    /// Refuse to build when an event type declared with `#[derive(Event)]` has no handler.
    pub strict_coverage: bool,
    /// First pause after a store failure; doubles up to `store_backoff_max`.
    #[serde(with = "humantime_serde")]
    pub store_backoff_initial: Duration,
    /// Longest pause after store failures.
    #[serde(with = "humantime_serde")]
    pub store_backoff_max: Duration,
    /// Whether to subscribe to the store's wake-ups when it has them.
    pub use_wakeups: bool,
    /// Whether completions take over the next event of each ordering key they finish
    /// ([`ClaimStore::complete_and_hand_off`](crate::store::ClaimStore::complete_and_hand_off)): the key's events
    /// then run one after another on this worker without a claim in between. While due events
    /// wait for a free slot (the last claim came back full), one hand-off in 16 gives its key
    /// back to the queue instead, so that keys this worker holds do not keep others waiting.
    pub hand_off_keys: bool,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            worker_id: default_worker_id(),
            batch_size: 32,
            max_in_flight: 64,
            lease: Duration::from_secs(30),
            renew_interval: None,
            poll_interval: Duration::from_millis(500),
            handler_timeout: Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            no_handler: NoHandlerPolicy::default(),
            missing_handler_grace: Duration::from_secs(3600),
            strict_coverage: false,
            store_backoff_initial: Duration::from_millis(100),
            store_backoff_max: Duration::from_secs(10),
            use_wakeups: true,
            hand_off_keys: true,
        }
    }
}

/// The longest lease a worker takes (a lease is how long a crashed worker's events wait).
const MAX_LEASE: Duration = Duration::from_secs(24 * 3600);
/// The longest any other duration setting may be: every timer and clock can add it.
const MAX_SETTING: Duration = Duration::from_secs(365 * 24 * 3600);
/// The most events one worker runs at once (its slots are a semaphore of this many permits).
const MAX_IN_FLIGHT: usize = 1 << 20;

fn default_worker_id() -> String {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    format!(
        "worker-{}-{}",
        std::process::id(),
        &unique[unique.len() - 8..]
    )
}

macro_rules! setters {
    ($($(#[$doc:meta])* $fn:ident($field:ident: $ty:ty);)*) => {
        $( $(#[$doc])* pub fn $fn(mut self, value: $ty) -> Self { self.$field = value; self } )*
    };
}

impl WorkerConfig {
    setters! {
        /// Sets the worker id.
        with_worker_id(worker_id: String);
        /// Sets the events per claim.
        with_batch_size(batch_size: usize);
        /// Sets how many events run at once.
        with_max_in_flight(max_in_flight: usize);
        /// Sets the lease length.
        with_lease(lease: Duration);
        /// Sets the poll interval.
        with_poll_interval(poll_interval: Duration);
        /// Sets the default handler timeout.
        with_handler_timeout(handler_timeout: Duration);
        /// Sets the shutdown grace period.
        with_shutdown_grace(shutdown_grace: Duration);
        /// Sets the retry policy.
        with_retry(retry: RetryPolicy);
        /// Sets the no-handler policy.
        with_no_handler(no_handler: NoHandlerPolicy);
        /// Sets how long a recorded handler may be missing before it gives up.
        with_missing_handler_grace(missing_handler_grace: Duration);
        /// Refuses to build when a declared event type has no handler.
        with_strict_coverage(strict_coverage: bool);
        /// Sets the first pause after a store failure.
        with_store_backoff_initial(store_backoff_initial: Duration);
        /// Sets the longest pause after store failures.
        with_store_backoff_max(store_backoff_max: Duration);
        /// Enables or disables wake-ups.
        with_wakeups(use_wakeups: bool);
        /// Enables or disables taking over an ordering key's next event at completion.
        with_hand_off_keys(hand_off_keys: bool);
    }

    /// Sets the lease renewal interval.
    pub fn with_renew_interval(mut self, interval: Duration) -> Self {
        self.renew_interval = Some(interval);
        self
    }

    /// The effective renewal interval.
    pub fn renew_every(&self) -> Duration {
        self.renew_interval.unwrap_or(self.lease / 3)
    }

    /// The safety margin of a lease: a tenth of it. A lease the store has not confirmed for
    /// `lease - 2 × margin` (from when the confirming claim or renewal was sent) is compromised
    /// (contract P6): its handlers' cancellation fires and their outcome will be discarded; at
    /// `lease - margin` they are aborted, before the store's lease can expire, whether or not the
    /// store ever answers. So no handler of the event still runs in this worker once another
    /// worker can claim it. (A handler that blocks its thread cannot be aborted: keep blocking
    /// work in `spawn_blocking`.)
    ///
    /// ```
    /// use outbox_core::WorkerConfig;
    /// use std::time::Duration;
    /// let config = WorkerConfig::default().with_lease(Duration::from_secs(30));
    /// assert_eq!(config.lease_margin(), Duration::from_secs(3));
    /// ```
    pub fn lease_margin(&self) -> Duration {
        self.lease / 10
    }

    /// Until when a lease confirmed by a claim or renewal *sent* at `sent` can be trusted: the
    /// store counts the lease from its own now, which is no earlier than `sent`, so this holds
    /// whatever the store's clock says.
    pub(crate) fn lease_trusted_until(&self, sent: tokio::time::Instant) -> tokio::time::Instant {
        sent + (self.lease - self.lease_margin())
    }

    /// Checks every setting, naming the first invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |field: &str, d: Duration| {
            if d.is_zero() {
                Err(ConfigError::new(field, "must be positive"))
            } else {
                Ok(())
            }
        };
        if self.worker_id.trim().is_empty() {
            return Err(ConfigError::new("worker_id", "must not be empty"));
        }
        if self.batch_size == 0 {
            return Err(ConfigError::new("batch_size", "must be at least 1"));
        }
        if self.max_in_flight == 0 {
            return Err(ConfigError::new("max_in_flight", "must be at least 1"));
        }
        if self.lease < Duration::from_millis(50) {
            return Err(ConfigError::new("lease", "must be at least 50 ms"));
        }
        if self.lease > MAX_LEASE {
            return Err(ConfigError::new("lease", "must be at most 24 hours"));
        }
        for (field, value) in [
            ("poll_interval", self.poll_interval),
            ("handler_timeout", self.handler_timeout),
            ("shutdown_grace", self.shutdown_grace),
            ("store_backoff_initial", self.store_backoff_initial),
            ("store_backoff_max", self.store_backoff_max),
            ("missing_handler_grace", self.missing_handler_grace),
            ("renew_interval", self.renew_every()),
        ] {
            if value > MAX_SETTING {
                return Err(ConfigError::new(field, "must be at most 365 days"));
            }
        }
        if self.max_in_flight > MAX_IN_FLIGHT {
            return Err(ConfigError::new(
                "max_in_flight",
                format!("must be at most {MAX_IN_FLIGHT}"),
            ));
        }
        positive("poll_interval", self.poll_interval)?;
        positive("handler_timeout", self.handler_timeout)?;
        positive("store_backoff_initial", self.store_backoff_initial)?;
        positive("missing_handler_grace", self.missing_handler_grace)?;
        positive("renew_interval", self.renew_every())?;
        if self.renew_every() >= self.lease - 2 * self.lease_margin() {
            return Err(ConfigError::new(
                "renew_interval",
                "must be shorter than four fifths of the lease (a lease not renewed by then is \
                 compromised and its handlers are cancelled)",
            ));
        }
        if self.store_backoff_max < self.store_backoff_initial {
            return Err(ConfigError::new(
                "store_backoff_max",
                "must not be below store_backoff_initial",
            ));
        }
        self.retry.validate()
    }
}
