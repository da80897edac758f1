//! A stored event's JSON payload, kept as the text the store returned and parsed only when asked.

use std::fmt;
use std::sync::OnceLock;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use serde_json::value::RawValue;

/// The deepest nesting of JSON arrays and objects any store reads back (a payload's and a
/// handler output's): `1` is depth 0, `[1]` depth 1, `{"a": [1]}` depth 2.
pub const MAX_JSON_DEPTH: usize = 64;

/// Checks what `RawValue` does not: that JSON text nests at most
/// [`MAX_JSON_DEPTH`](crate::model::MAX_JSON_DEPTH) levels and escapes no lone UTF-16 surrogate,
/// so that a `Value` can always be parsed from a payload a claim accepted (C11). One pass over the
/// bytes, no recursion; syntax is left to the JSON parser that runs next.
fn check_readable(text: &str) -> Result<(), serde_json::Error> {
    use serde::de::Error as _;
    let bytes = text.as_bytes();
    // The UTF-16 unit of a `\uXXXX` escape starting at `at`, if one does.
    let unit_at = |at: usize| -> Option<u16> {
        if bytes.get(at) != Some(&b'\\') || bytes.get(at + 1) != Some(&b'u') {
            return None;
        }
        text.get(at + 2..at + 6)
            .and_then(|hex| u16::from_str_radix(hex, 16).ok())
    };
    let lone_surrogate =
        || serde_json::Error::custom("the payload escapes a lone UTF-16 surrogate");
    let (mut depth, mut in_string, mut i) = (0_usize, false, 0);
    while i < bytes.len() {
        match (in_string, bytes[i]) {
            (true, b'"') => in_string = false,
            (true, b'\\') => {
                match unit_at(i) {
                    Some(0xD800..=0xDBFF) => match unit_at(i + 6) {
                        Some(0xDC00..=0xDFFF) => i += 12,
                        _ => return Err(lone_surrogate()),
                    },
                    Some(0xDC00..=0xDFFF) => return Err(lone_surrogate()),
                    Some(_) => i += 6,
                    None => i += 2,
                }
                continue;
            }
            (false, b'"') => in_string = true,
            (false, b'[' | b'{') => {
                depth += 1;
                if depth > MAX_JSON_DEPTH {
                    return Err(serde_json::Error::custom(format!(
                        "the payload nests arrays and objects more than {} levels deep",
                        MAX_JSON_DEPTH
                    )));
                }
            }
            (false, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}

/// The JSON payload of an [`EventRecord`](crate::model::EventRecord).
///
/// A store that keeps payloads as JSON text (PostgreSQL, SQLite, Redis, MongoDB) hands them over
/// as that text, checked to be valid JSON but not parsed: a typed handler deserializes its event
/// straight from the text ([`decode`](Self::decode)), and an untyped one gets a
/// [`serde_json::Value`] parsed the first time it looks (the payload dereferences to one).
/// Parsing every payload into a `Value` at claim time was the largest single cost of a claimed
/// event in the client (about 5,300 instructions of the 35,000 per event of a PostgreSQL drain,
/// counted with callgrind), spent again by typed handlers that deserialized their event from that
/// `Value`.
///
/// ```
/// use outbox_core::model::Payload;
/// use serde_json::json;
///
/// let payload = Payload::from_json(r#"{"email": "ada@example.com", "n": 3}"#.to_owned())?;
/// // Untyped access: the payload dereferences to a `serde_json::Value`.
/// assert_eq!(payload["email"], "ada@example.com");
/// assert_eq!(payload, json!({"email": "ada@example.com", "n": 3}));
///
/// // Typed access: deserialized from the text, without an intermediate `Value`.
/// #[derive(serde::Deserialize)]
/// struct Invite { email: String }
/// let invite: Invite = payload.decode()?;
/// assert_eq!(invite.email, "ada@example.com");
///
/// // Not JSON: an error, not a payload.
/// assert!(Payload::from_json("{oops".to_owned()).is_err());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone)]
pub struct Payload(Repr);

#[derive(Clone)]
enum Repr {
    /// Valid JSON text; `value` is filled the first time a `Value` is asked for.
    Text {
        text: Box<RawValue>,
        value: OnceLock<Value>,
    },
    /// A payload that was a `Value` already (built in memory, or read from a store that stores
    /// documents rather than text).
    Value(Value),
}

impl Payload {
    /// A payload from JSON text, checked to be valid JSON that a `Value` can hold (without
    /// building one): nested at most [`MAX_JSON_DEPTH`](crate::model::MAX_JSON_DEPTH) levels,
    /// every `\u` escape a whole character (no lone UTF-16 surrogate).
    ///
    /// # Errors
    ///
    /// The text is not one valid JSON value, nests deeper, or escapes a lone surrogate.
    ///
    /// ```
    /// use outbox_core::model::Payload;
    /// assert!(Payload::from_json(r#"["\ud83d\ude00"]"#.to_owned()).is_ok());
    /// assert!(Payload::from_json(r#"["\ud800"]"#.to_owned()).is_err());
    /// assert!(Payload::from_json("[".repeat(65) + &"]".repeat(65)).is_err());
    /// ```
    pub fn from_json(text: String) -> Result<Self, serde_json::Error> {
        check_readable(&text)?;
        RawValue::from_string(text).map(Self::from)
    }

    /// A payload from borrowed JSON text (copied), checked like [`from_json`](Self::from_json).
    ///
    /// # Errors
    ///
    /// The text is not one valid JSON value.
    ///
    /// ```
    /// let payload = outbox_core::model::Payload::from_json_str(" {\"a\": 1} ").unwrap();
    /// assert_eq!(payload["a"], 1);
    /// ```
    pub fn from_json_str(text: &str) -> Result<Self, serde_json::Error> {
        check_readable(text)?;
        serde_json::from_str::<Box<RawValue>>(text).map(Self::from)
    }

    /// A payload from JSON text a driver already parsed as a `RawValue`, checked like
    /// [`from_json`](Self::from_json) for what a `RawValue` lets through (depth, lone surrogates).
    ///
    /// # Errors
    ///
    /// The text nests deeper than a `Value` may, or escapes a lone surrogate.
    ///
    /// ```
    /// let raw = serde_json::value::RawValue::from_string("[1]".to_owned()).unwrap();
    /// assert_eq!(outbox_core::model::Payload::from_raw(raw).unwrap()[0], 1);
    /// ```
    pub fn from_raw(text: Box<RawValue>) -> Result<Self, serde_json::Error> {
        check_readable(text.get())?;
        Ok(Self::from(text))
    }

    /// The payload as a [`serde_json::Value`], parsed from the text on first use.
    ///
    /// Text checked at the claim always parses, with one exception only a hand-written row can
    /// hold: a number beyond `f64`'s range (`1e400`), which JSON allows and a `Value` cannot
    /// hold. Such a payload reads as `Value::Null` here (an error is logged) and fails
    /// [`decode`](Self::decode) with serde_json's "number out of range".
    ///
    /// ```
    /// let payload = outbox_core::model::Payload::from(serde_json::json!([1, 2]));
    /// assert_eq!(payload.as_value()[1], 2);
    /// ```
    pub fn as_value(&self) -> &Value {
        match &self.0 {
            Repr::Value(value) => value,
            Repr::Text { text, value } => value.get_or_init(|| parse(text)),
        }
    }

    /// The payload as an owned [`serde_json::Value`].
    ///
    /// ```
    /// let payload = outbox_core::model::Payload::from_json("{\"a\":1}".to_owned()).unwrap();
    /// assert_eq!(payload.into_value(), serde_json::json!({"a": 1}));
    /// ```
    pub fn into_value(self) -> Value {
        match self.0 {
            Repr::Value(value) => value,
            Repr::Text { text, value } => value.into_inner().unwrap_or_else(|| parse(&text)),
        }
    }

    /// Deserializes the payload into `T`: from the JSON text when the store gave text, without
    /// building a `Value` first.
    ///
    /// # Errors
    ///
    /// The payload does not have the shape of `T`.
    ///
    /// ```
    /// let payload = outbox_core::model::Payload::from_json("[1, 2, 3]".to_owned()).unwrap();
    /// let numbers: Vec<u8> = payload.decode().unwrap();
    /// assert_eq!(numbers, [1, 2, 3]);
    /// assert!(payload.decode::<String>().is_err());
    /// ```
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        match &self.0 {
            Repr::Value(value) => T::deserialize(value),
            Repr::Text { text, .. } => serde_json::from_str(text.get()),
        }
    }

    /// The payload as JSON text (as `Display` writes it): the store's text as it was, or the
    /// `Value` serialized.
    ///
    /// ```
    /// let payload = outbox_core::model::Payload::from(serde_json::json!({"a": 1}));
    /// assert_eq!(payload.to_json(), r#"{"a":1}"#);
    /// ```
    pub fn to_json(&self) -> String {
        self.to_string()
    }
}

/// Parses checked JSON text into a `Value`; see [`Payload::as_value`] for the one way it fails.
fn parse(text: &RawValue) -> Value {
    serde_json::from_str(text.get()).unwrap_or_else(|err| {
        tracing::error!(
            error = %err,
            "a stored payload is JSON that a serde_json::Value cannot hold; reading it as null"
        );
        Value::Null
    })
}

impl From<Value> for Payload {
    fn from(value: Value) -> Self {
        Self(Repr::Value(value))
    }
}

impl From<Box<RawValue>> for Payload {
    fn from(text: Box<RawValue>) -> Self {
        Self(Repr::Text {
            text,
            value: OnceLock::new(),
        })
    }
}

impl From<Payload> for Value {
    fn from(payload: Payload) -> Self {
        payload.into_value()
    }
}

impl std::ops::Deref for Payload {
    type Target = Value;

    fn deref(&self) -> &Value {
        self.as_value()
    }
}

impl AsRef<Value> for Payload {
    fn as_ref(&self) -> &Value {
        self.as_value()
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_value(), f)
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Value(value) => fmt::Display::fmt(value, f),
            Repr::Text { text, .. } => f.write_str(text.get()),
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Self) -> bool {
        self.as_value() == other.as_value()
    }
}

impl PartialEq<Value> for Payload {
    fn eq(&self, other: &Value) -> bool {
        self.as_value() == other
    }
}

impl PartialEq<Payload> for Value {
    fn eq(&self, other: &Payload) -> bool {
        self == other.as_value()
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Through the `Value`, not the raw text: a `RawValue` keeps its text only for
        // serde_json's own serializer and would become a string in BSON or any other format.
        self.as_value().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(Self::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_and_value_payloads_agree() {
        let text = Payload::from_json(r#"{"a": [1, 2.5, "x", null], "b": {"c": true}}"#.to_owned())
            .unwrap();
        let value = Payload::from(json!({"a": [1, 2.5, "x", null], "b": {"c": true}}));
        assert_eq!(text, value);
        assert_eq!(text["b"]["c"], true);
        assert_eq!(
            text.to_json(),
            r#"{"a": [1, 2.5, "x", null], "b": {"c": true}}"#
        );
        assert_eq!(serde_json::to_value(&text).unwrap(), *value);
        assert_eq!(text.clone().into_value(), value.clone().into_value());
        assert_eq!(format!("{text:?}"), format!("{value:?}"));
        let round: Payload = serde_json::from_str(&serde_json::to_string(&text).unwrap()).unwrap();
        assert_eq!(round, text);
    }

    #[test]
    fn invalid_text_is_refused() {
        for bad in ["", "{", "[1,]", "nul", "{} {}", "\"unterminated"] {
            assert!(Payload::from_json(bad.to_owned()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_number_beyond_f64_reads_as_null_and_fails_to_decode() {
        let huge = Payload::from_json("{\"n\": 1e400}".to_owned()).expect("valid JSON");
        assert_eq!(*huge, Value::Null);
        let err = huge.decode::<Value>().expect_err("out of range");
        assert!(err.to_string().contains("out of range"), "{err}");
    }

    #[test]
    fn a_value_parsed_once_is_kept() {
        let text = Payload::from_json("{\"n\": 1}".to_owned()).unwrap();
        let first: *const Value = text.as_value();
        let second: *const Value = text.as_value();
        assert_eq!(first, second);
    }
}
