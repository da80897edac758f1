//! Durations and instants as the integer milliseconds databases and scripts store, with one rule
//! for values that do not fit.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// `d` in whole milliseconds, capped at a quarter of `i64::MAX` — far beyond any real lease or
/// delay, and small enough that a store can add it to an epoch-millisecond "now" (or to another
/// such duration) without overflowing.
///
/// ```
/// use outbox_core::kit::millis;
/// use std::time::Duration;
///
/// assert_eq!(millis(Duration::from_secs(30)), 30_000);
/// assert_eq!(millis(Duration::MAX), i64::MAX / 4);
/// ```
pub fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).map_or(MAX_MILLIS, |ms| ms.min(MAX_MILLIS))
}

/// The largest duration [`millis`] answers.
const MAX_MILLIS: i64 = i64::MAX / 4;

/// The instant `ms` milliseconds after the Unix epoch, or the latest instant chrono can hold when
/// `ms` is beyond it (a stored value no event can have reads as "never", not as an error).
///
/// ```
/// use outbox_core::kit::from_millis;
///
/// assert_eq!(from_millis(0).timestamp(), 0);
/// assert_eq!(from_millis(i64::MAX), chrono::DateTime::<chrono::Utc>::MAX_UTC);
/// ```
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// How long before `now` (epoch milliseconds) the instant `then` was; zero when `then` is not
/// before `now` (clocks of two machines) or absent (nothing is waiting).
///
/// ```
/// use outbox_core::kit::age_millis;
/// use std::time::Duration;
///
/// assert_eq!(age_millis(10_000, Some(4_000)), Duration::from_secs(6));
/// assert_eq!(age_millis(10_000, Some(12_000)), Duration::ZERO);
/// assert_eq!(age_millis(10_000, None), Duration::ZERO);
/// ```
pub fn age_millis(now: i64, then: Option<i64>) -> Duration {
    then.map_or(Duration::ZERO, |t| {
        Duration::from_millis(u64::try_from(now.saturating_sub(t)).unwrap_or(0))
    })
}
