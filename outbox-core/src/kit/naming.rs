//! Validation of configurable names (tables, schemas, collections, key prefixes) against injection
//! (contract C10).

use crate::model::error::ConfigError;

/// Checks that `name` is a safe identifier: 1–48 characters, ASCII letters, digits and `_`, not
/// starting with a digit. Backends quote names too; this keeps them portable across databases.
///
/// ```
/// use outbox_core::kit::validate_name;
/// assert!(validate_name("table", "outbox_events").is_ok());
/// assert!(validate_name("table", "events; DROP TABLE users").is_err());
/// assert!(validate_name("table", "").is_err());
/// assert!(validate_name("table", "1abc").is_err());
/// ```
pub fn validate_name(kind: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() || name.len() > 48 {
        return Err(ConfigError::new(
            kind,
            format!("`{name}` must be 1 to 48 characters long"),
        ));
    }
    if name.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(ConfigError::new(
            kind,
            format!("`{name}` must not start with a digit"),
        ));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(ConfigError::new(
            kind,
            format!("`{name}` contains {bad:?}; only ASCII letters, digits and `_` are allowed"),
        ));
    }
    Ok(())
}

impl From<ConfigError> for crate::model::StoreError {
    fn from(err: ConfigError) -> Self {
        crate::model::StoreError::InvalidRequest {
            message: err.to_string(),
        }
    }
}
