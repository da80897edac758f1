//! Throughput over the last minutes: a sampler reads [`InspectStore::stats`](outbox_core::store::InspectStore::stats)
//! at an interval and keeps the last samples.

use std::collections::VecDeque;
use std::sync::{Mutex, Weak};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::pages::AppState;

/// One reading of the store's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sample {
    /// When it was read.
    pub at: DateTime<Utc>,
    /// Processed plus dead events: finished ones (a purge lowers it; the chart skips drops).
    pub finished: u64,
    /// Pending events.
    pub pending: u64,
}

/// The last samples, oldest first.
#[derive(Debug)]
pub(crate) struct History {
    samples: Mutex<VecDeque<Sample>>,
    keep: usize,
}

impl History {
    pub(crate) fn new(keep: usize) -> Self {
        Self {
            samples: Mutex::new(VecDeque::with_capacity(keep)),
            keep: keep.max(2),
        }
    }

    fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == self.keep {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    /// Events finished per second between consecutive samples, with the end time of each span.
    pub(crate) fn rates(&self) -> Vec<(DateTime<Utc>, f64)> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples
            .iter()
            .zip(samples.iter().skip(1))
            .map(|(a, b)| {
                let secs = (b.at - a.at).num_milliseconds().max(1) as f64 / 1000.0;
                let done = b.finished.saturating_sub(a.finished) as f64;
                (b.at, done / secs)
            })
            .collect()
    }
}

/// Samples until the dashboard's state is dropped.
pub(crate) fn spawn_sampler(state: Weak<AppState>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(state) = state.upgrade() else {
                return;
            };
            match state.store.stats().await {
                Ok(stats) => state.history.push(Sample {
                    at: Utc::now(),
                    finished: stats.processed + stats.dead,
                    pending: stats.pending,
                }),
                Err(err) => tracing::warn!(error = %err, "dashboard: sampling stats failed"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{History, Sample};
    use chrono::{Duration, Utc};

    #[test]
    fn rates_per_second_and_drops_skipped() {
        let history = History::new(3);
        let t = Utc::now();
        for (s, finished) in [(0, 0), (10, 100), (20, 50), (30, 80)] {
            history.push(Sample {
                at: t + Duration::seconds(s),
                finished,
                pending: 0,
            });
        }
        let rates: Vec<f64> = history.rates().into_iter().map(|(_, r)| r).collect();
        assert_eq!(rates, vec![0.0, 3.0]);
    }
}
