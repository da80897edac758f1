//! The handler registry: handlers by event type, checked for duplicates when built (H1, H4, H5, H6).

use std::collections::BTreeMap;

use crate::handlers::handler::{Handler, HandlerRegistration};
use crate::model::error::RegistryError;

/// Handlers by event type, sorted by name, with no duplicate names per type.
///
/// ```
/// use outbox_core::{Handler, HandlerError};
/// use outbox_core::handlers::Registry;
///
/// let registry = Registry::builder()
///     .handler(Handler::raw("UserInvited", "audit", |_record, _ctx| async {
///         Ok::<_, HandlerError>(())
///     }))
///     .build()
///     .unwrap();
/// assert_eq!(registry.handlers_for("UserInvited").len(), 1);
/// assert!(registry.handlers_for("Unknown").is_empty());
/// ```
#[derive(Debug, Clone, Default)]
pub struct Registry {
    by_type: BTreeMap<String, Vec<Handler>>,
    /// Handler names per type, in the same order (built once: the worker asks for every event).
    names_by_type: BTreeMap<String, Vec<String>>,
    /// `(former name, current name)` per type, for handlers declared with `renamed_from`.
    renames_by_type: BTreeMap<String, Vec<(String, String)>>,
}

impl Registry {
    /// Starts a hand-built registry.
    pub fn builder() -> RegistryBuilder {
        RegistryBuilder::default()
    }

    /// Every handler registered with `#[handler]` anywhere in this binary (H1).
    ///
    /// Link-time registration needs the handler's crate to be linked: a library crate that the binary
    /// never references is not, so reference it (for example `use my_handlers as _;`).
    pub fn global() -> Result<Self, RegistryError> {
        Self::builder().with_registered().build()
    }

    /// The handlers for `event_type`, sorted by name.
    pub fn handlers_for(&self, event_type: &str) -> &[Handler] {
        self.by_type
            .get(event_type)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Every handler, by event type, then name.
    pub fn handlers(&self) -> impl Iterator<Item = &Handler> {
        self.by_type.values().flatten()
    }

    /// The names of the handlers for `event_type`, sorted.
    pub fn names_for(&self, event_type: &str) -> &[String] {
        self.names_by_type
            .get(event_type)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// `(former name, current name)` of the renamed handlers of `event_type`.
    pub fn renames_for(&self, event_type: &str) -> &[(String, String)] {
        self.renames_by_type
            .get(event_type)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Every event type that has a handler.
    pub fn event_types(&self) -> impl Iterator<Item = &str> {
        self.by_type.keys().map(String::as_str)
    }

    /// How many handlers in all.
    pub fn len(&self) -> usize {
        self.by_type.values().map(Vec::len).sum()
    }

    /// Whether there is no handler at all.
    pub fn is_empty(&self) -> bool {
        self.by_type.is_empty()
    }

    /// Compares handlers with the event types declared through `#[derive(Event)]` (H6).
    ///
    /// ```
    /// use outbox_core::{Handler, HandlerError};
    /// use outbox_core::handlers::Registry;
    /// let registry = Registry::builder()
    ///     .handler(Handler::raw("NeverDeclared", "h", |_r, _c| async { Ok::<_, HandlerError>(()) }))
    ///     .build()
    ///     .unwrap();
    /// let coverage = registry.coverage(&["Declared"]);
    /// assert_eq!(coverage.unhandled_event_types, vec!["Declared".to_string()]);
    /// assert_eq!(coverage.undeclared_handlers, vec![("NeverDeclared".to_string(), "h".to_string())]);
    /// ```
    pub fn coverage(&self, declared: &[&str]) -> Coverage {
        let unhandled_event_types = declared
            .iter()
            .filter(|t| !self.by_type.contains_key(**t))
            .map(|t| (*t).to_owned())
            .collect();
        let undeclared_handlers = self
            .by_type
            .iter()
            .filter(|(t, _)| !declared.contains(&t.as_str()))
            .flat_map(|(t, hs)| hs.iter().map(move |h| (t.clone(), h.name().to_owned())))
            .collect();
        Coverage {
            unhandled_event_types,
            undeclared_handlers,
        }
    }
}

/// Declared event types without handlers, and handlers for undeclared event types (H6).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Declared with `#[derive(Event)]` but handled by nobody.
    pub unhandled_event_types: Vec<String>,
    /// `(event type, handler name)` of handlers whose event type nobody declared.
    pub undeclared_handlers: Vec<(String, String)>,
}

impl Coverage {
    /// Whether every declared type has a handler and every handler a declared type.
    pub fn is_complete(&self) -> bool {
        self.unhandled_event_types.is_empty() && self.undeclared_handlers.is_empty()
    }
}

/// Collects handlers, then checks them in [`build`](RegistryBuilder::build).
#[derive(Debug, Default)]
pub struct RegistryBuilder {
    handlers: Vec<Handler>,
}

impl RegistryBuilder {
    /// Adds a hand-built handler.
    pub fn handler(mut self, handler: Handler) -> Self {
        self.handlers.push(handler);
        self
    }

    /// Adds every `#[handler]` registered in this binary.
    pub fn with_registered(mut self) -> Self {
        self.handlers.extend(
            inventory::iter::<HandlerRegistration>
                .into_iter()
                .map(Handler::from_registration),
        );
        self
    }

    /// Adds the `#[handler]`s registered for the given event types only (useful in tests that share
    /// a binary with unrelated handlers).
    pub fn with_registered_for(mut self, event_types: &[&str]) -> Self {
        self.handlers.extend(
            inventory::iter::<HandlerRegistration>
                .into_iter()
                .filter(|r| event_types.contains(&r.event_type))
                .map(Handler::from_registration),
        );
        self
    }

    /// Validates and sorts: duplicate names per event type, empty names, zero limits and typed
    /// parameters that declare another event type are errors.
    pub fn build(self) -> Result<Registry, RegistryError> {
        let mut by_type: BTreeMap<String, Vec<Handler>> = BTreeMap::new();
        for handler in self.handlers {
            validate(&handler)?;
            by_type
                .entry(handler.event_type().to_owned())
                .or_default()
                .push(handler);
        }
        for handlers in by_type.values_mut() {
            handlers.sort_by(|a, b| {
                a.name()
                    .cmp(b.name())
                    .then_with(|| a.location().cmp(b.location()))
            });
            if let Some(pair) = handlers.windows(2).find(|w| w[0].name() == w[1].name()) {
                return Err(RegistryError::DuplicateHandler {
                    event_type: pair[0].event_type().to_owned(),
                    name: pair[0].name().to_owned(),
                    first: pair[0].location().to_owned(),
                    second: pair[1].location().to_owned(),
                });
            }
            for renamed in handlers.iter().filter(|h| h.renamed_from().is_some()) {
                let old = renamed.renamed_from().unwrap_or_default();
                if let Some(other) = handlers.iter().find(|h| h.name() == old) {
                    return Err(RegistryError::InvalidHandler {
                        name: renamed.name().to_owned(),
                        location: renamed.location().to_owned(),
                        reason: format!(
                            "`renamed_from = \"{old}\"` names a handler that is still registered (at {})",
                            other.location()
                        ),
                    });
                }
            }
        }
        let names_by_type = by_type
            .iter()
            .map(|(t, hs)| (t.clone(), hs.iter().map(|h| h.name().to_owned()).collect()))
            .collect();
        let renames_by_type = by_type
            .iter()
            .map(|(t, hs)| {
                let renames: Vec<(String, String)> = hs
                    .iter()
                    .filter_map(|h| Some((h.renamed_from()?.to_owned(), h.name().to_owned())))
                    .collect();
                (t.clone(), renames)
            })
            .filter(|(_, renames)| !renames.is_empty())
            .collect();
        Ok(Registry {
            by_type,
            names_by_type,
            renames_by_type,
        })
    }
}

fn validate(handler: &Handler) -> Result<(), RegistryError> {
    let invalid = |reason: &str| RegistryError::InvalidHandler {
        name: handler.name().to_owned(),
        location: handler.location().to_owned(),
        reason: reason.to_owned(),
    };
    if handler.name().trim().is_empty() {
        return Err(invalid("the handler name must not be empty"));
    }
    if handler.event_type().trim().is_empty() {
        return Err(invalid("the event type must not be empty"));
    }
    if handler.max_attempts() == Some(0) {
        return Err(invalid("max_attempts must be at least 1"));
    }
    if handler.timeout().is_some_and(|t| t.is_zero()) {
        return Err(invalid("timeout must be positive"));
    }
    match handler.renamed_from() {
        Some(old) if old.trim().is_empty() => {
            return Err(invalid("renamed_from must not be empty"));
        }
        Some(old) if old == handler.name() => {
            return Err(invalid("renamed_from must differ from the handler's name"));
        }
        _ => {}
    }
    if let Some(declared) = handler.declared_event_type() {
        if declared != handler.event_type() {
            return Err(RegistryError::EventTypeMismatch {
                name: handler.name().to_owned(),
                location: handler.location().to_owned(),
                registered: handler.event_type().to_owned(),
                declared: declared.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::HandlerError;

    #[track_caller]
    fn noop(event_type: &str, name: &str) -> Handler {
        Handler::raw(event_type, name, |_r, _c| async {
            Ok::<_, HandlerError>(())
        })
    }

    #[test]
    fn duplicate_names_name_both_definitions() {
        let err = Registry::builder()
            .handler(noop("A", "same"))
            .handler(noop("A", "same"))
            .build()
            .unwrap_err();
        let RegistryError::DuplicateHandler { first, second, .. } = &err else {
            panic!("unexpected {err:?}")
        };
        assert!(
            first.contains("registry.rs") && second.contains("registry.rs"),
            "{err}"
        );
        assert_ne!(first, second);
    }

    #[test]
    fn same_name_on_different_types_is_fine() {
        let registry = Registry::builder()
            .handler(noop("A", "same"))
            .handler(noop("B", "same"))
            .build()
            .unwrap();
        assert_eq!(registry.len(), 2);
    }

    #[test]
    fn handlers_are_sorted_by_name() {
        let registry = Registry::builder()
            .handler(noop("A", "zeta"))
            .handler(noop("A", "alpha"))
            .build()
            .unwrap();
        let names: Vec<_> = registry
            .handlers_for("A")
            .iter()
            .map(Handler::name)
            .collect();
        assert_eq!(names, ["alpha", "zeta"]);
    }

    #[test]
    fn renames_are_listed_and_checked() {
        let registry = Registry::builder()
            .handler(noop("A", "send").with_renamed_from("mail::send"))
            .handler(noop("A", "audit"))
            .build()
            .unwrap();
        assert_eq!(
            registry.renames_for("A"),
            [("mail::send".to_owned(), "send".to_owned())]
        );
        assert_eq!(registry.names_for("A"), ["audit", "send"]);
        let err = Registry::builder()
            .handler(noop("A", "send").with_renamed_from("audit"))
            .handler(noop("A", "audit"))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("still registered"), "{err}");
        let err = Registry::builder()
            .handler(noop("A", "send").with_renamed_from("send"))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("differ"), "{err}");
    }

    #[test]
    fn zero_attempts_is_rejected() {
        let err = Registry::builder()
            .handler(noop("A", "x").with_max_attempts(0))
            .build()
            .unwrap_err();
        assert!(err.to_string().contains("max_attempts"), "{err}");
    }
}
