//! What inspection counts (contract C9): [`StoreStats`] for the whole outbox, [`TypeStats`] per
//! event type, and [`HeldBack`] for what keeps a store's cleanup from running.

use std::time::Duration;

#[cfg(doc)]
use crate::store::InspectStore;

/// Counts per status and lag (contract C9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StoreStats {
    /// Pending events, leased or not, due or not.
    pub pending: u64,
    /// Pending events due now and not leased.
    pub due: u64,
    /// Pending events under a live lease.
    pub leased: u64,
    /// Processed events still retained.
    pub processed: u64,
    /// Dead letters.
    pub dead: u64,
    /// Events set aside because they do not decode (contract C11).
    pub corrupt: u64,
    /// How long the oldest due, unleased event has been due (zero when none).
    pub oldest_due_age: Duration,
    /// What in the database holds the outbox's cleanup back, on stores where that can happen
    /// (PostgreSQL); `None` elsewhere.
    pub held_back: Option<HeldBack>,
}

/// What holds a store's cleanup back: on PostgreSQL the oldest open snapshot in the database (a
/// long transaction, `pg_dump`, an idle-in-transaction session, a replica with
/// `hot_standby_feedback`, a replication slot) keeps every row version the outbox deleted or
/// updated since it began, and claims walk them.
///
/// ```
/// use outbox_core::store::{HeldBack, StoreStats};
/// use std::time::Duration;
/// let stats = StoreStats::default().with_held_back(HeldBack::new(Duration::from_secs(600), 250_000));
/// assert_eq!(stats.to_json()["held_back"]["oldest_snapshot_age_ms"], 600_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HeldBack {
    /// How long the oldest snapshot any session of the database holds has been open.
    pub oldest_snapshot_age: Duration,
    /// Dead row versions in the outbox's table that cleanup has not removed.
    pub dead_rows: u64,
    /// Claims start just below what was last taken instead of walking the whole due index, because
    /// full walks became slow.
    pub windowed_claims: bool,
}

impl HeldBack {
    /// The age of the oldest snapshot and the dead rows.
    pub fn new(oldest_snapshot_age: Duration, dead_rows: u64) -> Self {
        Self {
            oldest_snapshot_age,
            dead_rows,
            windowed_claims: false,
        }
    }

    /// Says whether claims start just below what was last taken.
    pub fn with_windowed_claims(mut self, yes: bool) -> Self {
        self.windowed_claims = yes;
        self
    }

    /// Whether an operator should look: a snapshot open for more than a minute, or claims that
    /// had to switch to a window.
    ///
    /// ```
    /// use outbox_core::store::HeldBack;
    /// use std::time::Duration;
    /// assert!(!HeldBack::new(Duration::from_secs(2), 10).is_holding_back());
    /// assert!(HeldBack::new(Duration::from_secs(300), 10).is_holding_back());
    /// ```
    pub fn is_holding_back(&self) -> bool {
        self.oldest_snapshot_age > Duration::from_secs(60) || self.windowed_claims
    }
}

impl StoreStats {
    /// Builds stats from counts (for backend authors: the struct is `#[non_exhaustive]`).
    pub fn new(
        pending: u64,
        due: u64,
        leased: u64,
        processed: u64,
        dead: u64,
        oldest_due_age: Duration,
    ) -> Self {
        Self {
            pending,
            due,
            leased,
            processed,
            dead,
            corrupt: 0,
            oldest_due_age,
            held_back: None,
        }
    }

    /// Adds what holds the store's cleanup back.
    pub fn with_held_back(mut self, held_back: HeldBack) -> Self {
        self.held_back = Some(held_back);
        self
    }

    /// The counts as the JSON object operators' tools print: `pending`, `due`, `leased`,
    /// `processed`, `dead`, `corrupt` and `lag_ms`.
    ///
    /// ```
    /// let json = outbox_core::store::StoreStats::default().with_corrupt(1).to_json();
    /// assert_eq!((json["corrupt"].as_u64(), json["lag_ms"].as_u64()), (Some(1), Some(0)));
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "pending": self.pending,
            "due": self.due,
            "leased": self.leased,
            "processed": self.processed,
            "dead": self.dead,
            "corrupt": self.corrupt,
            "lag_ms": millis(self.oldest_due_age),
            "held_back": self.held_back.map(|h| serde_json::json!({
                "oldest_snapshot_age_ms": millis(h.oldest_snapshot_age),
                "dead_rows": h.dead_rows,
                "windowed_claims": h.windowed_claims,
            })),
        })
    }

    /// Sets the count of events set aside as corrupt.
    ///
    /// ```
    /// let stats = outbox_core::store::StoreStats::default().with_corrupt(2);
    /// assert_eq!(stats.corrupt, 2);
    /// ```
    pub fn with_corrupt(mut self, corrupt: u64) -> Self {
        self.corrupt = corrupt;
        self
    }
}

/// Counts of one event type's unfinished events (see [`InspectStore::stats_by_type`]).
///
/// ```
/// let row = outbox_core::store::TypeStats::new("UserInvited")
///     .with_counts(5, 2, 1, 3)
///     .with_oldest_due_age(std::time::Duration::from_millis(40));
/// assert_eq!((row.pending, row.due, row.leased, row.dead), (5, 2, 1, 3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct TypeStats {
    /// The event type.
    pub event_type: String,
    /// Pending events of the type, leased or not, due or not.
    pub pending: u64,
    /// Of those, due now and not leased.
    pub due: u64,
    /// Of those, under a live lease.
    pub leased: u64,
    /// Dead letters of the type.
    pub dead: u64,
    /// How long the type's oldest due, unleased event has been due (zero when none).
    pub oldest_due_age: Duration,
}

impl TypeStats {
    /// A row of zeros for `event_type` (for backend authors: the struct is `#[non_exhaustive]`).
    pub fn new(event_type: impl Into<String>) -> Self {
        Self {
            event_type: event_type.into(),
            ..Self::default()
        }
    }

    /// Sets the counts: pending, due, leased, dead.
    #[must_use]
    pub fn with_counts(mut self, pending: u64, due: u64, leased: u64, dead: u64) -> Self {
        (self.pending, self.due, self.leased, self.dead) = (pending, due, leased, dead);
        self
    }

    /// The row as JSON: `event_type`, `pending`, `due`, `leased`, `dead` and `lag_ms`.
    ///
    /// ```
    /// let json = outbox_core::store::TypeStats::new("T").with_counts(3, 2, 1, 0).to_json();
    /// assert_eq!(json["due"].as_u64(), Some(2));
    /// ```
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "event_type": self.event_type,
            "pending": self.pending,
            "due": self.due,
            "leased": self.leased,
            "dead": self.dead,
            "lag_ms": millis(self.oldest_due_age),
        })
    }

    /// Sets the age of the oldest due event.
    #[must_use]
    pub fn with_oldest_due_age(mut self, age: Duration) -> Self {
        self.oldest_due_age = age;
        self
    }
}

/// Whole milliseconds of `d`, saturating.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
