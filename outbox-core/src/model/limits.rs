//! Input limits every store enforces before the database sees an event (contract C11), so the same
//! event gets the same verdict on every backend.

use crate::model::error::StoreError;
use crate::model::record::NewEvent;

/// The largest event an outbox accepts, checked by [`Limits::check`] before anything is written.
///
/// | what | default |
/// |---|---|
/// | `event_type` | 1–255 bytes |
/// | `ordering_key`, `idempotency_key`, `correlation_id`, `traceparent` | 1–255 bytes when set |
/// | payload, serialized as JSON | at most 1 MiB |
/// | payload nesting (arrays and objects inside each other) | at most 64 levels ([`MAX_JSON_DEPTH`]) |
/// | NUL characters (`\0`, JSON `\u0000`) | refused everywhere: in the type, the keys, the correlation id and any string or object key of the payload |
///
/// NUL is refused rather than escaped because PostgreSQL cannot store it in `text` or `jsonb`, and
/// silently rewriting a payload would hand handlers something other than what was enqueued.
///
/// Nesting is limited to 64 levels because every store must read back what it accepted: JSON
/// readers stop at 128 levels (serde_json's default, which the stores' drivers use) and BSON
/// documents at 100 (MongoDB, counting the levels around the payload), and a check that walks the
/// payload before serializing it must not itself recurse without bound. The check uses its own
/// stack, so a payload nested 100,000 levels is refused with an error, not a stack overflow.
///
/// ```
/// use outbox_core::{Limits, NewEvent, StoreError};
///
/// let limits = Limits::default().with_max_payload_bytes(64);
/// let big = NewEvent::new("UserInvited", serde_json::json!({"note": "x".repeat(100)}));
/// assert!(matches!(limits.check(&big), Err(StoreError::InvalidRequest { .. })));
///
/// let nul = NewEvent::new("UserInvited", serde_json::json!({"name": "a\u{0}b"}));
/// assert!(Limits::default().check(&nul).is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Longest event type, in bytes.
    pub max_event_type_bytes: usize,
    /// Longest ordering key, idempotency key or correlation id, in bytes.
    pub max_key_bytes: usize,
    /// Largest payload, serialized as compact JSON, in bytes.
    pub max_payload_bytes: usize,
    /// Deepest nesting of arrays and objects in a payload (at most [`MAX_JSON_DEPTH`]).
    pub max_payload_depth: usize,
}

/// The largest payload limit a store accepts (8 MiB).
pub const MAX_PAYLOAD_BYTES: usize = 8 * 1024 * 1024;

/// The largest event type and key limit a store accepts (1,024 bytes).
pub const MAX_KEY_BYTES: usize = 1024;

pub use crate::model::payload::MAX_JSON_DEPTH;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_type_bytes: 255,
            max_key_bytes: 255,
            max_payload_bytes: 1024 * 1024,
            max_payload_depth: MAX_JSON_DEPTH,
        }
    }
}

impl Limits {
    /// Sets the largest payload, in bytes of compact JSON.
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
        self
    }

    /// Sets the deepest nesting of arrays and objects a payload may have; values above
    /// [`MAX_JSON_DEPTH`] are lowered to it (deeper payloads would not read back on every store).
    ///
    /// ```
    /// use outbox_core::{Limits, NewEvent};
    /// let limits = Limits::default().with_max_payload_depth(2);
    /// assert!(limits.check(&NewEvent::new("T", serde_json::json!({"a": [1]}))).is_ok());
    /// assert!(limits.check(&NewEvent::new("T", serde_json::json!({"a": [[1]]}))).is_err());
    /// ```
    pub fn with_max_payload_depth(mut self, depth: usize) -> Self {
        self.max_payload_depth = depth.min(MAX_JSON_DEPTH);
        self
    }

    /// Sets the longest event type, in bytes.
    pub fn with_max_event_type_bytes(mut self, bytes: usize) -> Self {
        self.max_event_type_bytes = bytes;
        self
    }

    /// Sets the longest key or correlation id, in bytes.
    pub fn with_max_key_bytes(mut self, bytes: usize) -> Self {
        self.max_key_bytes = bytes;
        self
    }

    /// Checks the limits themselves (every store's `build()` calls this): each at least 1 and at
    /// most what every store can hold — payloads [`MAX_PAYLOAD_BYTES`](crate::model::MAX_PAYLOAD_BYTES) (a MongoDB document holds
    /// 16 MiB with everything else), event types and keys [`MAX_KEY_BYTES`](crate::model::MAX_KEY_BYTES) (PostgreSQL indexes
    /// keys, and an index entry holds at most about 2,700 bytes).
    ///
    /// ```
    /// use outbox_core::Limits;
    /// assert!(Limits::default().validate().is_ok());
    /// assert!(Limits::default().with_max_payload_bytes(0).validate().is_err());
    /// assert!(Limits::default().with_max_key_bytes(1 << 20).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), crate::model::ConfigError> {
        for (field, value, max) in [
            (
                "limits.max_event_type_bytes",
                self.max_event_type_bytes,
                MAX_KEY_BYTES,
            ),
            ("limits.max_key_bytes", self.max_key_bytes, MAX_KEY_BYTES),
            (
                "limits.max_payload_bytes",
                self.max_payload_bytes,
                MAX_PAYLOAD_BYTES,
            ),
            (
                "limits.max_payload_depth",
                self.max_payload_depth,
                MAX_JSON_DEPTH,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(crate::model::ConfigError::new(
                    field,
                    format!("must be between 1 and {max}, not {value}"),
                ));
            }
        }
        Ok(())
    }

    /// Checks `event` and returns its payload serialized as compact JSON, ready to store (stores
    /// write this text instead of serializing the payload a second time).
    ///
    /// ```
    /// let event = outbox_core::NewEvent::new("T", serde_json::json!({"a": 1}));
    /// assert_eq!(outbox_core::Limits::default().encode(&event).unwrap(), r#"{"a":1}"#);
    /// ```
    pub fn encode(&self, event: &NewEvent) -> Result<String, StoreError> {
        self.check_fields(event)?;
        let max_depth = self.max_payload_depth.min(MAX_JSON_DEPTH);
        match inspect(&event.payload, max_depth) {
            Shape::TooDeep => {
                return Err(invalid(
                    event,
                    &format!(
                        "the payload nests arrays and objects more than {max_depth} levels deep"
                    ),
                ));
            }
            Shape::HasNul => {
                return Err(invalid(
                    event,
                    "the payload contains a NUL character (\\u0000), which no store accepts",
                ));
            }
            Shape::Fine => {}
        }
        let text = serde_json::to_string(&event.payload)
            .map_err(|e| invalid(event, &format!("the payload does not serialize: {e}")))?;
        if text.len() > self.max_payload_bytes {
            return Err(invalid(
                event,
                &format!(
                    "the payload is {} bytes of JSON, more than the limit of {} bytes",
                    text.len(),
                    self.max_payload_bytes
                ),
            ));
        }
        Ok(text)
    }

    /// Checks `event` without keeping the serialized payload.
    pub fn check(&self, event: &NewEvent) -> Result<(), StoreError> {
        self.encode(event).map(drop)
    }

    fn check_fields(&self, event: &NewEvent) -> Result<(), StoreError> {
        let ty = event.event_type.as_str();
        if ty.trim().is_empty() {
            return Err(StoreError::invalid("event_type must not be empty"));
        }
        check_text("event_type", ty, self.max_event_type_bytes)?;
        // Empty values are refused rather than stored: stores differ in whether an empty string
        // reads back as empty or as absent, and it carries nothing either way.
        for (field, value) in [
            ("ordering_key", &event.ordering_key),
            ("idempotency_key", &event.idempotency_key),
            ("correlation_id", &event.correlation_id),
            ("traceparent", &event.traceparent),
        ] {
            if let Some(value) = value {
                if value.is_empty() {
                    return Err(StoreError::invalid(format!(
                        "{field} must not be empty when set"
                    )));
                }
                check_text(field, value, self.max_key_bytes)?;
            }
        }
        Ok(())
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), StoreError> {
    if value.len() > max {
        return Err(StoreError::invalid(format!(
            "{field} is {} bytes long, more than the limit of {max} bytes",
            value.len()
        )));
    }
    if value.contains('\0') {
        return Err(StoreError::invalid(format!(
            "{field} contains a NUL character, which no store accepts"
        )));
    }
    Ok(())
}

fn invalid(event: &NewEvent, why: &str) -> StoreError {
    StoreError::invalid(format!("event {} ({}): {why}", event.id, event.event_type))
}

/// What [`inspect`] found in a JSON value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Within the depth, no NUL character.
    Fine,
    /// Arrays and objects nest deeper than allowed (the walk stopped there).
    TooDeep,
    /// A string or object key contains NUL.
    HasNul,
}

/// Walks `value` with a stack of its own (never recursing, so any depth is safe) and stops at the
/// first level deeper than `max_depth` or the first NUL character in a string or object key.
pub(crate) fn inspect(value: &serde_json::Value, max_depth: usize) -> Shape {
    use serde_json::Value;
    let mut stack: Vec<(&Value, usize)> = vec![(value, 0)];
    while let Some((value, depth)) = stack.pop() {
        match value {
            Value::String(s) if s.contains('\0') => return Shape::HasNul,
            Value::Array(items) => {
                if depth + 1 > max_depth {
                    return Shape::TooDeep;
                }
                stack.extend(items.iter().map(|v| (v, depth + 1)));
            }
            Value::Object(map) => {
                if depth + 1 > max_depth {
                    return Shape::TooDeep;
                }
                for (k, v) in map {
                    if k.contains('\0') {
                        return Shape::HasNul;
                    }
                    stack.push((v, depth + 1));
                }
            }
            _ => {}
        }
    }
    Shape::Fine
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> NewEvent {
        NewEvent::new("T", json!({"a": [1, {"b": "c"}]}))
    }

    #[test]
    fn accepts_ordinary_events() {
        let e = event()
            .ordering_key("k")
            .idempotency_key("i")
            .correlation_id("c");
        assert_eq!(
            Limits::default().encode(&e).unwrap(),
            r#"{"a":[1,{"b":"c"}]}"#
        );
    }

    #[test]
    fn refuses_nul_anywhere() {
        let limits = Limits::default();
        for bad in [
            NewEvent::new("T\0", json!({})),
            event().ordering_key("k\0"),
            event().idempotency_key("\0"),
            event().correlation_id("c\0"),
            NewEvent::new("T", json!({"deep": [{"x": "a\u{0}"}]})),
            NewEvent::new("T", json!({"key\u{0}": 1})),
        ] {
            let err = limits.check(&bad).unwrap_err();
            assert!(err.to_string().contains("NUL"), "{err}");
        }
        // An escaped backslash followed by "u0000" is not a NUL character.
        assert!(limits.check(&NewEvent::new("T", json!("\\u0000"))).is_ok());
    }

    #[test]
    fn refuses_oversized_fields() {
        let limits = Limits::default();
        assert!(
            limits
                .check(&NewEvent::new("x".repeat(256), json!({})))
                .is_err()
        );
        assert!(
            limits
                .check(&NewEvent::new("x".repeat(255), json!({})))
                .is_ok()
        );
        assert!(
            limits
                .check(&event().idempotency_key("k".repeat(256)))
                .is_err()
        );
        assert!(
            limits
                .check(&event().ordering_key("k".repeat(256)))
                .is_err()
        );
        assert!(
            limits
                .check(&event().correlation_id("c".repeat(256)))
                .is_err()
        );
        let big = NewEvent::new("T", json!("x".repeat(1024 * 1024)));
        let err = limits.check(&big).unwrap_err();
        assert!(err.to_string().contains("more than the limit"), "{err}");
    }

    /// Builds `[[[…1…]]]` nested `depth` levels without recursion.
    pub(crate) fn nested(depth: usize) -> serde_json::Value {
        let mut v = json!(1);
        for _ in 0..depth {
            v = serde_json::Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn refuses_payloads_nested_deeper_than_the_limit_without_recursing() {
        let limits = Limits::default();
        assert_eq!(inspect(&nested(64), 64), Shape::Fine);
        assert!(limits.check(&NewEvent::new("T", nested(64))).is_ok());
        let err = limits.check(&NewEvent::new("T", nested(65))).unwrap_err();
        assert!(err.to_string().contains("more than 64 levels"), "{err}");
        let nested_obj = (0..64).fold(json!("x"), |v, _| json!({ "k": v }));
        assert!(
            limits
                .check(&NewEvent::new("T", nested_obj.clone()))
                .is_ok()
        );
        assert!(
            limits
                .check(&NewEvent::new("T", json!({ "k": nested_obj })))
                .is_err()
        );
        // Far deeper than any stack could recurse through: refused, not a crash.
        let event = NewEvent::new("T", nested(1_000_000));
        assert!(limits.check(&event).is_err());
        drop(event); // taken apart without recursion
        // The depth is capped at what every store reads back.
        assert_eq!(
            Limits::default()
                .with_max_payload_depth(500)
                .max_payload_depth,
            MAX_JSON_DEPTH
        );
    }

    #[test]
    fn refuses_empty_type_and_keys() {
        let limits = Limits::default();
        assert!(limits.check(&NewEvent::new(" ", json!({}))).is_err());
        assert!(limits.check(&event().ordering_key("")).is_err());
        assert!(limits.check(&event().idempotency_key("")).is_err());
        assert!(limits.check(&event().correlation_id("")).is_err());
    }
}
