//! Text that came from outside the process — event types, keys, correlation ids, handler and
//! store error messages — as it may appear in a log line or span (issue: anyone who can enqueue
//! could otherwise forge log lines or rewrite an operator's terminal with newlines, carriage
//! returns or ANSI escape sequences).

use std::fmt;

/// Displays `text` with every control character escaped as Rust does (`\n`, `\r`, `\t`,
/// `\u{1b}`, …) and everything else as it is. Log through it wherever the text is untrusted.
///
/// ```
/// use outbox_core::model::text::Untrusted;
/// assert_eq!(Untrusted("ok: é").to_string(), "ok: é");
/// assert_eq!(
///     Untrusted("a\nINFO forged\r\u{1b}[2J").to_string(),
///     "a\\nINFO forged\\r\\u{1b}[2J"
/// );
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if c.is_control() {
                write!(f, "{}", c.escape_default())?;
            } else {
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Shorthand for [`Untrusted`].
pub(crate) fn untrusted(text: &str) -> Untrusted<'_> {
    Untrusted(text)
}
