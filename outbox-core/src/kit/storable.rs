//! One rule, applied in core before any store sees an outcome, that makes what a handler returned
//! storable on every store (contract C11): a handler's error, output, logs and retry delay can never
//! make a completion fail to write, so no event loops on an outcome its store refuses and no
//! completion batch fails because of one item.
//!
//! | what | rule |
//! |---|---|
//! | NUL characters (`\0`) in error messages, log messages and output strings or keys | replaced by U+FFFD `�` (no store keeps NUL in text: PostgreSQL refuses it) |
//! | an error message longer than [`MAX_ERROR_BYTES`] | cut at a character boundary, marked [`CUT_MARK`] with the original length |
//! | a handler output nested deeper than [`MAX_JSON_DEPTH`] or larger than [`MAX_OUTPUT_BYTES`] of JSON | the handler's permanent failure, with that reason ([`check_output`]) |
//! | a retry delay longer than [`MAX_RETRY_DELAY`] | lowered to it |
//!
//! Log messages are already bounded by [`MAX_MESSAGE_BYTES`](crate::model::MAX_MESSAGE_BYTES) per line
//! and [`MAX_LOG_BYTES`](crate::model::MAX_LOG_BYTES) per event.
//!
//! ```
//! use outbox_core::kit::storable::{MAX_ERROR_BYTES, storable_text};
//! assert_eq!(storable_text("a\0b"), "a\u{FFFD}b");
//! assert!(storable_text(&"x".repeat(MAX_ERROR_BYTES * 2)).len() < MAX_ERROR_BYTES + 64);
//! ```

use std::borrow::Cow;
use std::time::Duration;

use serde_json::Value;

pub use crate::model::limits::{MAX_JSON_DEPTH, MAX_KEY_BYTES, MAX_PAYLOAD_BYTES};
use crate::model::limits::{Shape, inspect};
use crate::model::record::HandlerState;
use crate::store::Completion;

/// The longest handler error message stored, in bytes; a longer one is cut and marked.
pub const MAX_ERROR_BYTES: usize = 8 * 1024;

/// The largest handler output stored, in bytes of compact JSON (MongoDB documents hold at most
/// 16 MiB in all; an output is meant to be a small receipt).
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// The longest retry delay stored (365 days): every store can add it to its clock.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// What ends a cut message, before the original length.
pub const CUT_MARK: &str = "… [cut; ";

/// `text` as every store keeps it: NUL replaced by U+FFFD, cut to [`MAX_ERROR_BYTES`] at a
/// character boundary and marked with its original length when longer.
///
/// ```
/// let long = "é".repeat(10_000);
/// let kept = outbox_core::kit::storable::storable_text(&long);
/// assert!(kept.ends_with("… [cut; 20000 bytes]"));
/// ```
pub fn storable_text(text: &str) -> Cow<'_, str> {
    let cleaned = replace_nul(text);
    if cleaned.len() <= MAX_ERROR_BYTES {
        return cleaned;
    }
    let mut end = MAX_ERROR_BYTES;
    while !cleaned.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}{CUT_MARK}{} bytes]",
        &cleaned[..end],
        text.len()
    ))
}

fn replace_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        Cow::Borrowed(text)
    }
}

/// Checks a handler's output before it is recorded: `Err` says why it cannot be stored (the
/// runtime records that as the handler's permanent failure); NUL characters are replaced.
///
/// ```
/// use outbox_core::kit::storable::check_output;
/// let mut fine = Some(serde_json::json!({"id": "a\u{0}"}));
/// check_output(&mut fine).unwrap();
/// assert_eq!(fine.unwrap()["id"], "a\u{FFFD}");
///
/// let mut deep = Some((0..100).fold(serde_json::json!(1), |v, _| serde_json::json!([v])));
/// assert!(check_output(&mut deep).unwrap_err().contains("64 levels"));
/// ```
pub fn check_output(output: &mut Option<Value>) -> Result<(), String> {
    let Some(value) = output else {
        return Ok(());
    };
    match inspect(value, MAX_JSON_DEPTH) {
        Shape::TooDeep => {
            return Err(format!(
                "the handler's output nests arrays and objects more than {MAX_JSON_DEPTH} levels \
                 deep, more than every store reads back; return a flatter output"
            ));
        }
        Shape::HasNul => replace_nul_in(value),
        Shape::Fine => {}
    }
    let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
    if size > MAX_OUTPUT_BYTES {
        return Err(format!(
            "the handler's output is {size} bytes of JSON, more than the {MAX_OUTPUT_BYTES} bytes \
             an output may hold; return a smaller receipt"
        ));
    }
    Ok(())
}

/// Replaces NUL in every string and object key of `value` (already known to be within
/// [`MAX_JSON_DEPTH`], so recursion is bounded).
fn replace_nul_in(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(clean) = replace_nul(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(replace_nul_in),
        Value::Object(map) => {
            let entries = std::mem::take(map);
            for (key, mut v) in entries {
                replace_nul_in(&mut v);
                map.insert(replace_nul(&key).into_owned(), v);
            }
        }
        _ => {}
    }
}

/// Makes one handler's recorded state storable (its error and log messages; its output is checked
/// earlier, by [`check_output`], when it is reported).
pub(crate) fn make_state_storable(state: &mut HandlerState) {
    if let Some(error) = &mut state.last_error {
        if let Cow::Owned(kept) = storable_text(error) {
            *error = kept;
        }
    }
    for entry in &mut state.logs {
        if let Cow::Owned(kept) = replace_nul(&entry.message) {
            entry.message = kept;
        }
    }
}

/// Makes a whole completion storable: every handler's state, and the retry delay.
pub(crate) fn make_storable(completion: &mut Completion) {
    completion
        .handler_results
        .values_mut()
        .for_each(make_state_storable);
    if let Some(delay) = &mut completion.retry_delay {
        *delay = (*delay).min(MAX_RETRY_DELAY);
    }
}

/// The smallest form of a completion that a store refused to write alone: every handler keeps
/// whether it succeeded or gave up and its attempt count, but no output, logs or long errors. The
/// runtime writes this instead so that an outcome is never looped on.
pub(crate) fn stripped(completion: &Completion, why: &str) -> Completion {
    let mut results = completion.handler_results.clone();
    for state in results.values_mut() {
        state.output = None;
        state.logs.clear();
        if !state.is_settled() || state.last_error.is_some() {
            let error = format!(
                "the outcome could not be stored ({why}); stored without outputs and logs{}",
                state
                    .last_error
                    .as_deref()
                    .map(|e| format!(": {}", e.chars().take(512).collect::<String>()))
                    .unwrap_or_default()
            );
            state.last_error = Some(storable_text(&error).into_owned());
        }
    }
    let mut stripped = Completion {
        status: completion.status,
        handler_results: results,
        attempts: completion.attempts,
        retry_delay: completion.retry_delay,
    };
    make_storable(&mut stripped);
    stripped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::record::EventStatus;
    use serde_json::json;

    #[test]
    fn text_is_cleaned_and_cut_at_a_character_boundary() {
        assert_eq!(storable_text("plain"), Cow::Borrowed("plain"));
        let long = format!("{}é", "x".repeat(MAX_ERROR_BYTES - 1));
        let kept = storable_text(&long);
        assert!(kept.starts_with(&"x".repeat(MAX_ERROR_BYTES - 1)));
        assert!(kept.ends_with(&format!("{CUT_MARK}{} bytes]", long.len())));
        assert!(!kept.contains('\0'));
    }

    #[test]
    fn outputs_too_large_or_deep_are_refused_and_nul_is_replaced() {
        let mut big = Some(json!("x".repeat(MAX_OUTPUT_BYTES)));
        assert!(
            check_output(&mut big)
                .unwrap_err()
                .contains("bytes of JSON")
        );
        let mut nul_key = Some(json!({"a\u{0}": ["b\u{0}"]}));
        check_output(&mut nul_key).unwrap();
        assert_eq!(nul_key, Some(json!({"a\u{FFFD}": ["b\u{FFFD}"]})));
        let mut none = None;
        assert!(check_output(&mut none).is_ok());
    }

    #[test]
    fn completions_are_made_storable() {
        let mut completion = Completion {
            status: EventStatus::Pending,
            handler_results: [(
                "h".to_owned(),
                HandlerState {
                    last_error: Some("bad\0".repeat(10_000)),
                    ..HandlerState::default()
                },
            )]
            .into(),
            attempts: 1,
            retry_delay: Some(Duration::MAX),
        };
        make_storable(&mut completion);
        assert_eq!(completion.retry_delay, Some(MAX_RETRY_DELAY));
        let error = completion.handler_results["h"]
            .last_error
            .as_deref()
            .unwrap();
        assert!(!error.contains('\0') && error.contains(CUT_MARK), "{error}");
        let small = stripped(&completion, "document too large");
        let error = small.handler_results["h"].last_error.as_deref().unwrap();
        assert!(error.starts_with("the outcome could not be stored (document too large)"));
        assert!(error.len() < 1024);
    }
}
