//! Exponential back-off with jitter, capped (contract P2).

use std::sync::Arc;
use std::time::Duration;

use crate::model::error::ConfigError;

/// A source of uniform random numbers in `[0, 1)`, injectable so tests get exact delays.
pub type JitterSource = Arc<dyn Fn() -> f64 + Send + Sync>;

/// How failed handlers are retried.
///
/// The delay before attempt `n + 1` after `n` failures is `initial × multiplier^(n-1)`, capped at
/// `max_delay`, then scaled by a random factor in `[1 - jitter, 1]` so retries of many events spread
/// out.
///
/// ```
/// use outbox_core::RetryPolicy;
/// use std::time::Duration;
///
/// let policy = RetryPolicy::default()
///     .with_initial_delay(Duration::from_secs(1))
///     .with_max_delay(Duration::from_secs(10))
///     .with_jitter(0.0);
/// assert_eq!(policy.delay_after(1), Duration::from_secs(1));
/// assert_eq!(policy.delay_after(3), Duration::from_secs(4));
/// assert_eq!(policy.delay_after(30), Duration::from_secs(10));
/// ```
#[derive(Clone, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per handler before it gives up (a handler's own `max_attempts` overrides it).
    pub max_attempts: u32,
    /// Delay after the first failure.
    #[serde(with = "humantime_serde")]
    pub initial_delay: Duration,
    /// Growth factor per further failure.
    pub multiplier: f64,
    /// Upper bound of any delay.
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// Fraction of the delay that is randomized, in `[0, 1]`.
    pub jitter: f64,
    #[serde(skip, default = "default_random")]
    random: JitterSource,
}

fn default_random() -> JitterSource {
    Arc::new(rand::random::<f64>)
}

impl std::fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("initial_delay", &self.initial_delay)
            .field("multiplier", &self.multiplier)
            .field("max_delay", &self.max_delay)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

impl Default for RetryPolicy {
    /// 10 attempts, 1 s doubling to at most 10 min, 50 % jitter.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            initial_delay: Duration::from_secs(1),
            multiplier: 2.0,
            max_delay: Duration::from_secs(600),
            jitter: 0.5,
            random: default_random(),
        }
    }
}

impl RetryPolicy {
    /// Sets the default attempts per handler.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Sets the delay after the first failure.
    pub fn with_initial_delay(mut self, delay: Duration) -> Self {
        self.initial_delay = delay;
        self
    }

    /// Sets the growth factor.
    pub fn with_multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the cap.
    pub fn with_max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = delay;
        self
    }

    /// Sets the randomized fraction (0 = exact delays).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Replaces the random source (tests inject a constant).
    ///
    /// ```
    /// use outbox_core::RetryPolicy;
    /// use std::{sync::Arc, time::Duration};
    /// let policy = RetryPolicy::default()
    ///     .with_initial_delay(Duration::from_secs(10))
    ///     .with_jitter(0.5)
    ///     .with_random(Arc::new(|| 0.0));
    /// assert_eq!(policy.delay_after(1), Duration::from_secs(5));
    /// ```
    pub fn with_random(mut self, random: JitterSource) -> Self {
        self.random = random;
        self
    }

    /// Checks the settings.
    ///
    /// ```
    /// let bad = outbox_core::RetryPolicy::default().with_max_attempts(0);
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_attempts == 0 {
            return Err(ConfigError::new("retry.max_attempts", "must be at least 1"));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError::new(
                "retry.multiplier",
                "must be a finite number >= 1",
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::new("retry.jitter", "must be between 0 and 1"));
        }
        if self.max_delay > crate::kit::storable::MAX_RETRY_DELAY {
            return Err(ConfigError::new(
                "retry.max_delay",
                "must be at most 365 days (the longest delay a store keeps)",
            ));
        }
        if self.initial_delay > self.max_delay {
            return Err(ConfigError::new(
                "retry.initial_delay",
                "must not exceed retry.max_delay",
            ));
        }
        Ok(())
    }

    /// The delay before the next attempt after `failures` failed attempts (1-based).
    pub fn delay_after(&self, failures: u32) -> Duration {
        let exponent = failures.saturating_sub(1).min(1_000) as i32;
        let base = self.initial_delay.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max_delay.as_secs_f64());
        let r = (self.random)().clamp(0.0, 1.0);
        let factor = 1.0 - self.jitter * (1.0 - r);
        Duration::try_from_secs_f64(capped * factor).unwrap_or(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_bounds() {
        let policy = RetryPolicy::default()
            .with_initial_delay(Duration::from_secs(8))
            .with_jitter(0.25);
        for _ in 0..1000 {
            let d = policy.delay_after(1);
            assert!(
                d >= Duration::from_secs(6) && d <= Duration::from_secs(8),
                "{d:?}"
            );
        }
    }

    /// The boundaries of every check: the largest and equal values pass, one beyond fails.
    #[test]
    fn validation_boundaries() {
        let ok = |p: RetryPolicy| p.validate().is_ok();
        assert!(!ok(RetryPolicy::default().with_multiplier(f64::INFINITY)));
        assert!(!ok(RetryPolicy::default().with_multiplier(f64::NAN)));
        assert!(!ok(RetryPolicy::default().with_multiplier(0.99)));
        assert!(ok(RetryPolicy::default().with_multiplier(1.0)));
        let max = crate::kit::storable::MAX_RETRY_DELAY;
        assert!(ok(RetryPolicy::default().with_max_delay(max)));
        assert!(!ok(
            RetryPolicy::default().with_max_delay(max + Duration::from_millis(1))
        ));
        let at = Duration::from_secs(7);
        assert!(ok(RetryPolicy::default()
            .with_initial_delay(at)
            .with_max_delay(at)));
        assert!(!ok(RetryPolicy::default()
            .with_initial_delay(at + Duration::from_millis(1))
            .with_max_delay(at)));
        assert!(!ok(RetryPolicy::default().with_jitter(1.01)));
        assert!(ok(RetryPolicy::default().with_jitter(1.0)));
    }

    #[test]
    fn huge_attempt_counts_do_not_overflow() {
        let policy = RetryPolicy::default().with_jitter(0.0);
        assert_eq!(policy.delay_after(u32::MAX), policy.max_delay);
    }
}
