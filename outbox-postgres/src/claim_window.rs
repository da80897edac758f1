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
//! So the store times its claims' walks. After [`SLOW_WALKS`] slow full walks in a row, claims start
//! at a *floor* instead of the index's beginning: [`MARGIN`] before the earliest due time among the
//! events the previous claim took (every entry before that was dead or being claimed by someone
//! else when it walked there), or [`MARGIN`] before now when it took none. Claims therefore walk
//! only past what was already consumed — the recent events without a backlog, the backlog's head
//! with one. An event that becomes pending with a due time below the floor — a transaction that
//! ran longer than [`MARGIN`] before it committed, a claim that was rolled back — is found by a
//! full walk ("sweep") that one claim in a while still makes: every [`SWEEP_EVERY`], or twenty
//! times as long as the last full walk took, whichever is longer. A fast sweep ends the mode.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// A full walk that took longer than this (beyond the claim's own work) walked dead index
/// entries: an ordinary claim takes 0.1–1 ms; 120,000 dead entries cost about 10 ms. A busy
/// machine can make one claim this slow, hardly three in a row ([`SLOW_WALKS`]); and a mistaken
/// switch costs little (events below the floor wait for the next sweep, whose speed ends the mode).
pub(crate) const SLOW_WALK: Duration = Duration::from_millis(5);

/// How many slow full walks in a row switch claims to a floor: one slow claim can be a busy
/// machine; dead entries that cannot be cleaned up make every walk slow.
pub(crate) const SLOW_WALKS: u32 = 3;

/// How far below the due time of what the last claim took (or below now) the next claim starts:
/// events whose due time is older than this when they commit wait for the next sweep.
pub(crate) const MARGIN: Duration = Duration::from_millis(1000);

/// The least time between two sweeps.
pub(crate) const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The claim mode a store handle (and its clones) share.
#[derive(Debug, Default)]
pub(crate) struct ClaimWindow {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Claims start at a floor (full walks are slow).
    windowed: bool,
    /// Slow full walks in a row, while not windowed.
    slow_walks: u32,
    /// When the last sweep began and how long it took.
    last_sweep: Option<(Instant, Duration)>,
    /// The earliest due time among the events the last claim took.
    last_taken: Option<DateTime<Utc>>,
}

/// Where one claim starts walking the due index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Walk {
    /// At its beginning.
    Full,
    /// At this due time.
    From(DateTime<Utc>),
}

impl Walk {
    /// The claim function's `since` argument (`NULL` for a full walk).
    pub(crate) fn since(self) -> Option<DateTime<Utc>> {
        match self {
            Self::Full => None,
            Self::From(at) => Some(at),
        }
    }
}

fn below(at: DateTime<Utc>) -> DateTime<Utc> {
    at - chrono::Duration::from_std(MARGIN).unwrap_or_default()
}

impl ClaimWindow {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Where the next claim starts. A sweep due now is taken by this claim only (the others keep
    /// to the floor meanwhile).
    pub(crate) fn next(&self, now: Instant, wall: DateTime<Utc>) -> Walk {
        let mut state = self.state();
        if !state.windowed {
            return Walk::Full;
        }
        let due = state.last_sweep.is_none_or(|(at, took)| {
            now.saturating_duration_since(at) >= SWEEP_EVERY.max(took * 20)
        });
        if due {
            state.last_sweep = Some((now, Duration::ZERO));
            return Walk::Full;
        }
        Walk::From(below(state.last_taken.unwrap_or(wall).min(wall)))
    }

    /// Records a claim that walked `walk`, began at `began`, took `took` and returned `returned`
    /// events, the earliest of which was due at `earliest`. Leasing and returning events takes
    /// time of its own (counted as 50 µs each); what is left over [`SLOW_WALK`] was walking.
    pub(crate) fn record(
        &self,
        walk: Walk,
        began: Instant,
        took: Duration,
        returned: usize,
        earliest: Option<DateTime<Utc>>,
    ) {
        let mut state = self.state();
        if earliest.is_some() {
            state.last_taken = earliest;
        }
        if walk != Walk::Full {
            return;
        }
        let work =
            Duration::from_micros(50).saturating_mul(u32::try_from(returned).unwrap_or(u32::MAX));
        let slow = took > SLOW_WALK + work;
        state.slow_walks = if slow { state.slow_walks + 1 } else { 0 };
        if state.windowed {
            if slow {
                state.last_sweep = Some((began, took));
            } else {
                tracing::info!(took = ?took, "outbox claims are fast again; claiming from the whole due index");
                state.windowed = false;
                state.last_sweep = None;
            }
        } else if state.slow_walks >= SLOW_WALKS {
            tracing::warn!(
                took = ?took,
                "outbox claims walk many dead index entries (a long transaction holds back vacuum?); \
                 claiming from just below what was last taken, with a full sweep now and then"
            );
            state.windowed = true;
            state.last_sweep = Some((began, took));
        }
    }

    /// Whether claims start at a floor now.
    pub(crate) fn is_windowed(&self) -> bool {
        self.state().windowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_full_walks_switch_to_a_floor_with_sweeps() {
        let w = ClaimWindow::default();
        let t0 = Instant::now();
        let wall = Utc::now();
        let ms = Duration::from_millis;
        assert_eq!(w.next(t0, wall), Walk::Full);
        w.record(Walk::Full, t0, ms(1), 0, None);
        assert_eq!(w.next(t0, wall), Walk::Full, "fast full walks stay full");
        w.record(Walk::Full, t0, ms(8), 100, None);
        w.record(Walk::Full, t0, ms(80), 0, None);
        w.record(Walk::Full, t0, ms(80), 0, None);
        w.record(Walk::Full, t0, ms(1), 0, None);
        w.record(Walk::Full, t0, ms(80), 0, None);
        assert!(!w.is_windowed(), "slow walks must come in a row");
        w.record(Walk::Full, t0, ms(80), 0, None);
        w.record(Walk::Full, t0, ms(80), 0, None);
        assert!(w.is_windowed());
        // Nothing taken yet: the floor is the margin below now.
        assert_eq!(w.next(t0 + ms(10), wall), Walk::From(below(wall)));
        // A claim took events: the next starts the margin below the earliest of them, backlog or
        // not (a full claim does not end the mode).
        let taken = wall - chrono::Duration::seconds(30);
        w.record(Walk::From(below(wall)), t0, ms(2), 100, Some(taken));
        assert_eq!(w.next(t0 + ms(20), wall), Walk::From(below(taken)));
        // The sweep is due 20 × 80 ms after the slow one began; one claim takes it.
        let sweep_at = t0 + ms(1_600);
        assert_eq!(w.next(sweep_at, wall), Walk::Full);
        assert_eq!(w.next(sweep_at, wall), Walk::From(below(taken)));
        // A fast sweep ends the mode.
        w.record(Walk::Full, sweep_at, ms(1), 0, None);
        assert!(!w.is_windowed());
        assert_eq!(w.next(sweep_at, wall), Walk::Full);
    }
}
