//! Input limits every store enforces before the database sees an event (contract C11), so the same
//! event gets the same verdict on every backend.

use crate::error::StoreError;
use crate::record::NewEvent;

/// The largest event an outbox accepts, checked by [`Limits::check`] before anything is written.
///
/// | what | default |
/// |---|---|
/// | `event_type` | 1–255 bytes |
/// | `ordering_key`, `idempotency_key`, `correlation_id` | at most 255 bytes (keys: not empty when set) |
/// | payload, serialized as JSON | at most 1 MiB |
/// | NUL characters (`\0`, JSON `\u0000`) | refused everywhere: in the type, the keys, the correlation id and any string or object key of the payload |
///
/// NUL is refused rather than escaped because PostgreSQL cannot store it in `text` or `jsonb`, and
/// silently rewriting a payload would hand handlers something other than what was enqueued.
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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_type_bytes: 255,
            max_key_bytes: 255,
            max_payload_bytes: 1024 * 1024,
        }
    }
}

impl Limits {
    /// Sets the largest payload, in bytes of compact JSON.
    pub fn with_max_payload_bytes(mut self, bytes: usize) -> Self {
        self.max_payload_bytes = bytes;
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

    /// Checks `event` and returns its payload serialized as compact JSON, ready to store (stores
    /// write this text instead of serializing the payload a second time).
    ///
    /// ```
    /// let event = outbox_core::NewEvent::new("T", serde_json::json!({"a": 1}));
    /// assert_eq!(outbox_core::Limits::default().encode(&event).unwrap(), r#"{"a":1}"#);
    /// ```
    pub fn encode(&self, event: &NewEvent) -> Result<String, StoreError> {
        self.check_fields(event)?;
        if has_nul(&event.payload) {
            return Err(invalid(
                event,
                "the payload contains a NUL character (\\u0000), which no store accepts",
            ));
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
        for (field, value) in [
            ("ordering_key", &event.ordering_key),
            ("idempotency_key", &event.idempotency_key),
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
        if let Some(traceparent) = &event.traceparent {
            check_text("traceparent", traceparent, self.max_key_bytes)?;
        }
        if let Some(correlation) = &event.correlation_id {
            check_text("correlation_id", correlation, self.max_key_bytes)?;
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

/// Whether any string or object key in `value` contains NUL.
fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
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

    #[test]
    fn refuses_empty_type_and_keys() {
        let limits = Limits::default();
        assert!(limits.check(&NewEvent::new(" ", json!({}))).is_err());
        assert!(limits.check(&event().ordering_key("")).is_err());
        assert!(limits.check(&event().idempotency_key("")).is_err());
    }
}
