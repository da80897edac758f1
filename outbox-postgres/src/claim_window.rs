//! Claims that stay fast while a long transaction holds back vacuum (issue: the default table mode
//! survives a long transaction).
//!
//! A claim walks the due index `(due_at, seq) WHERE status = 'pending'` from its start. Every
//! event leaves dead entries there (its insert's and its claim's), and while any transaction's
//! snapshot is older than them — a long report, `pg_dump`, an idle-in-transaction session, a
//! replica with `hot_standby_feedback` — PostgreSQL can neither remove them nor mark them dead in
//! the index, so every claim visits each one's heap tuple: measured, 57,673 buffers and 76–255 ms
//! for an empty claim after 100,000 events with a snapshot held, against 130 buffers and 2.5 ms
//! without. The cost grows with every event since the snapshot began, until claims cannot keep up.
//!
//! So the store times its claims. While claims that found no backlog (they came back short) are
//! slow (three in a row), the next claims walk only the window of due times `[now - window, now]` — the events that
//! became due lately, which in a queue without backlog is every due event — and one claim in a
//! while (every [`SWEEP_EVERY`], or twenty times as long as the last full walk took, whichever is
//! longer) still walks the whole index, so that an event whose due time is older than the window
//! when it commits (its transaction ran longer than the window) is claimed too, a sweep later. A
//! claim that comes back full means a backlog may be waiting beyond the window: the next claims
//! walk the whole index again until one comes back short. When a full walk is fast again, the
//! window is dropped.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A claim that came back short and took longer than this (beyond its own work) walked dead index
/// entries. Well above an ordinary claim (0.1–1 ms) and above what a loaded machine adds to one.
pub(crate) const SLOW_CLAIM: Duration = Duration::from_millis(20);

/// How many slow full walks in a row switch claims to the window: one slow claim can be a busy
/// machine; dead entries that cannot be cleaned up make every walk slow.
pub(crate) const SLOW_WALKS: u32 = 3;

/// The window of due times a windowed claim walks: events whose due time is older than this when
/// they commit wait for the next sweep.
pub(crate) const WINDOW: Duration = Duration::from_millis(1000);

/// The least time between two full walks while windowed.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The claim mode a store handle (and its clones) share.
#[derive(Debug, Default)]
pub(crate) struct ClaimWindow {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Claims walk only the window (full walks are slow and there is no backlog).
    windowed: bool,
    /// Slow full walks in a row, while not windowed.
    slow_walks: u32,
    /// When the last full walk began while windowed, and how long it took.
    last_sweep: Option<(Instant, Duration)>,
}

/// What one claim walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// The whole due index.
    Full,
    /// Due times in `[now - WINDOW, now]`.
    Window,
}

impl Walk {
    /// The claim function's `window_ms` argument (`NULL` for a full walk).
    pub(crate) fn window_ms(self) -> Option<i64> {
        match self {
            Self::Full => None,
            Self::Window => Some(i64::try_from(WINDOW.as_millis()).unwrap_or(i64::MAX)),
        }
    }
}

impl ClaimWindow {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What the next claim walks. A sweep due now is taken by this claim only (the others keep to
    /// the window meanwhile).
    pub(crate) fn next(&self, now: Instant) -> Walk {
        let mut state = self.state();
        if !state.windowed {
            return Walk::Full;
        }
        let due = state.last_sweep.is_none_or(|(at, took)| {
            now.saturating_duration_since(at) >= SWEEP_EVERY.max(took * 20)
        });
        if due {
            state.last_sweep = Some((now, Duration::ZERO));
            Walk::Full
        } else {
            Walk::Window
        }
    }

    /// Records a claim that walked `walk`, began at `began`, took `took` and returned `returned`
    /// events, `full` when as many as asked for. Leasing and returning events takes time of its
    /// own (counted as 50 µs each); what is left over [`SLOW_CLAIM`] was walking.
    pub(crate) fn record(
        &self,
        walk: Walk,
        began: Instant,
        took: Duration,
        returned: usize,
        full: bool,
    ) {
        let mut state = self.state();
        if full {
            // A backlog may wait beyond the window.
            state.windowed = false;
            state.last_sweep = None;
            return;
        }
        if walk == Walk::Full {
            let work = Duration::from_micros(50)
                .saturating_mul(u32::try_from(returned).unwrap_or(u32::MAX));
            let slow = took > SLOW_CLAIM + work;
            state.slow_walks = if slow { state.slow_walks + 1 } else { 0 };
            if !state.windowed && state.slow_walks < SLOW_WALKS {
                return;
            }
            if slow && !state.windowed {
                tracing::warn!(
                    took = ?took,
                    window = ?WINDOW,
                    "outbox claims walk many dead index entries (a long transaction holds back \
                     vacuum?); claiming from a window of recent due times, with a full sweep now \
                     and then"
                );
            } else if !slow && state.windowed {
                tracing::info!(took = ?took, "outbox claims are fast again; claiming from the whole due index");
            }
            state.windowed = slow;
            state.last_sweep = slow.then_some((began, took));
        }
    }

    /// Whether claims walk only the window now.
    pub(crate) fn is_windowed(&self) -> bool {
        self.state().windowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_short_claims_switch_to_the_window_with_sweeps() {
        let w = ClaimWindow::default();
        let t0 = Instant::now();
        assert_eq!(w.next(t0), Walk::Full);
        w.record(Walk::Full, t0, Duration::from_millis(1), 0, false);
        assert_eq!(w.next(t0), Walk::Full, "fast full walks stay full");
        w.record(Walk::Full, t0, Duration::from_millis(8), 100, false);
        assert!(
            !w.is_windowed(),
            "time spent on the events claimed is not walking"
        );
        w.record(Walk::Full, t0, Duration::from_millis(80), 0, false);
        w.record(Walk::Full, t0, Duration::from_millis(1), 0, false);
        w.record(Walk::Full, t0, Duration::from_millis(80), 0, false);
        w.record(Walk::Full, t0, Duration::from_millis(80), 0, false);
        assert!(
            !w.is_windowed(),
            "one slow walk, or two, can be a busy machine"
        );
        w.record(Walk::Full, t0, Duration::from_millis(80), 0, false);
        assert!(w.is_windowed());
        // The sweep that was slow counts from its start: the next one is due after 20 × 80 ms.
        assert_eq!(w.next(t0 + Duration::from_millis(10)), Walk::Window);
        assert_eq!(w.next(t0 + Duration::from_millis(1_500)), Walk::Window);
        let sweep_at = t0 + Duration::from_millis(1_600);
        assert_eq!(w.next(sweep_at), Walk::Full);
        assert_eq!(w.next(sweep_at), Walk::Window, "one sweep at a time");
        // A full window claim means a backlog: back to full walks.
        w.record(Walk::Window, sweep_at, Duration::from_millis(2), 32, true);
        assert_eq!(w.next(sweep_at), Walk::Full);
        // A fast full walk drops the window.
        for _ in 0..SLOW_WALKS {
            w.record(Walk::Full, t0, Duration::from_millis(80), 0, false);
        }
        assert!(w.is_windowed());
        w.record(Walk::Full, t0, Duration::from_millis(1), 0, false);
        assert!(!w.is_windowed());
    }
}
