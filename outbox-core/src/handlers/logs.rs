//! The buffer a delivery's handlers log into (contract L1) and the merge that bounds an event's
//! logs when its outcome is written. The entries themselves are [`LogEntry`] in the model.

use std::sync::{Arc, Mutex};

use crate::model::logs::{LogEntry, MAX_LOG_BYTES, MAX_LOG_ENTRIES, MAX_MESSAGE_BYTES};
use crate::model::record::HandlerResults;

/// The entries the handlers of one delivery log, by handler name, in order. Shared by the
/// delivery's handler contexts; the runtime takes them when it folds the outcome.
#[derive(Debug, Clone, Default)]
pub struct LogBuffer(Arc<Mutex<Vec<(String, LogEntry)>>>);

impl LogBuffer {
    pub(crate) fn push(&self, handler: &str, mut entry: LogEntry) {
        if entry.message.len() > MAX_MESSAGE_BYTES {
            let mut cut = MAX_MESSAGE_BYTES;
            while !entry.message.is_char_boundary(cut) {
                cut -= 1;
            }
            entry.message.truncate(cut);
            entry.message.push('…');
        }
        self.lock().push((handler.to_owned(), entry));
    }

    /// Takes every entry logged so far.
    pub(crate) fn take(&self) -> Vec<(String, LogEntry)> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, LogEntry)>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Appends `entries` to their handlers' logs in `results`, then bounds the event's logs to
/// [`MAX_LOG_ENTRIES`] and [`MAX_LOG_BYTES`], dropping the oldest entries first.
pub(crate) fn merge_logs(results: &mut HandlerResults, entries: Vec<(String, LogEntry)>) {
    if entries.is_empty() {
        return;
    }
    for (handler, entry) in entries {
        results.entry(handler).or_default().logs.push(entry);
    }
    let mut count: usize = results.values().map(|s| s.logs.len()).sum();
    let mut bytes: usize = results
        .values()
        .flat_map(|s| &s.logs)
        .map(|e| e.message.len())
        .sum();
    while count > MAX_LOG_ENTRIES || bytes > MAX_LOG_BYTES {
        // The handler whose first entry is the oldest loses it.
        let Some(state) = results
            .values_mut()
            .filter(|s| !s.logs.is_empty())
            .min_by_key(|s| s.logs[0].at)
        else {
            break;
        };
        let dropped = state.logs.remove(0);
        state.logs_dropped = state.logs_dropped.saturating_add(1);
        count -= 1;
        bytes -= dropped.message.len();
    }
}

#[cfg(test)]
mod tests {
    use super::{LogBuffer, merge_logs};
    use crate::model::logs::{LogEntry, LogLevel, MAX_LOG_ENTRIES, MAX_MESSAGE_BYTES};
    use crate::model::record::HandlerResults;

    fn entry(n: usize) -> LogEntry {
        LogEntry {
            at: chrono::Utc::now() + chrono::Duration::milliseconds(n as i64),
            level: LogLevel::Info,
            attempt: 1,
            message: format!("line {n}"),
        }
    }

    #[test]
    fn oldest_entries_go_first_and_are_counted() {
        let mut results = HandlerResults::new();
        let entries = (0..150)
            .map(|n| (if n % 2 == 0 { "a" } else { "b" }.to_owned(), entry(n)))
            .collect();
        merge_logs(&mut results, entries);
        let kept: usize = results.values().map(|s| s.logs.len()).sum();
        let dropped: u32 = results.values().map(|s| s.logs_dropped).sum();
        assert_eq!((kept, dropped), (MAX_LOG_ENTRIES, 50));
        assert_eq!(results["a"].logs[0].message, "line 50");
    }

    #[test]
    fn long_messages_are_cut() {
        let buffer = LogBuffer::default();
        let mut long = entry(0);
        long.message = "é".repeat(MAX_MESSAGE_BYTES);
        buffer.push("h", long);
        let taken = buffer.take();
        assert!(taken[0].1.message.len() <= MAX_MESSAGE_BYTES + '…'.len_utf8());
        assert!(taken[0].1.message.ends_with('…'));
        assert!(buffer.take().is_empty());
    }
}
