//! Application state for handlers: values given to the worker once
//! ([`WorkerBuilder::state`](crate::runtime::WorkerBuilder::state)) and received by `#[handler]` functions
//! through [`State<T>`] parameters, instead of globals.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

use crate::handlers::handler::HandlerContext;
use crate::model::error::HandlerError;

/// A shared value of type `T` given to the worker with
/// [`WorkerBuilder::state`](crate::runtime::WorkerBuilder::state); a `#[handler]` receives it by taking a
/// `State<T>` parameter after the event. It dereferences to `T`.
///
/// ```
/// use outbox_core::{EventRecord, HandlerError, State, handler};
///
/// struct Mailer {
///     from: String,
/// }
///
/// #[handler(event = "InviteMailRequested")]
/// async fn send_invite(event: EventRecord, mailer: State<Mailer>) -> Result<(), HandlerError> {
///     println!("from {} for event {}", mailer.from, event.id);
///     Ok(())
/// }
///
/// # fn demo(store: std::sync::Arc<dyn outbox_core::Store>) -> Result<(), Box<dyn std::error::Error>> {
/// let worker = outbox_core::Worker::builder(store)
///     .state(Mailer { from: "hello@example.com".into() })
///     .build()?; // fails naming `Mailer` if a handler needs it and it was not given
/// # Ok(()) }
/// ```
pub struct State<T: ?Sized>(pub Arc<T>);

impl<T: ?Sized> Clone for State<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T: ?Sized> std::ops::Deref for State<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + std::fmt::Debug> std::fmt::Debug for State<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("State").field(&&*self.0).finish()
    }
}

/// The state values a worker was given, by type. Cheap to clone (shared).
///
/// ```
/// let mut states = outbox_core::handlers::States::default();
/// states.insert(42_u32);
/// assert_eq!(states.get::<u32>().as_deref(), Some(&42));
/// assert!(states.get::<String>().is_none());
/// ```
#[derive(Clone, Default)]
pub struct States {
    values: Arc<HashMap<TypeId, StateValue>>,
}

/// A state value and its type's name.
type StateValue = (Arc<dyn Any + Send + Sync>, &'static str);

impl States {
    /// Adds `value`, replacing an earlier value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        self.insert_arc(Arc::new(value));
    }

    /// Adds a value the application keeps a handle to (`State<T>` parameters receive this same
    /// `Arc`), replacing an earlier value of the same type.
    ///
    /// ```
    /// use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
    /// let counter = Arc::new(AtomicU32::new(0));
    /// let mut states = outbox_core::handlers::States::default();
    /// states.insert_arc(Arc::clone(&counter));
    /// states.get::<AtomicU32>().unwrap().fetch_add(1, Ordering::SeqCst);
    /// assert_eq!(counter.load(Ordering::SeqCst), 1);
    /// ```
    pub fn insert_arc<T: Send + Sync + 'static>(&mut self, value: Arc<T>) {
        Arc::make_mut(&mut self.values)
            .insert(TypeId::of::<T>(), (value, std::any::type_name::<T>()));
    }

    /// The value of type `T`, if one was given.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let (value, _) = self.values.get(&TypeId::of::<T>())?;
        Arc::clone(value).downcast::<T>().ok()
    }

    /// Whether a value of the required type was given.
    pub fn satisfies(&self, requirement: &StateRequirement) -> bool {
        self.values.contains_key(&requirement.type_id)
    }

    /// Whether no value was given.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

impl std::fmt::Debug for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&str> = self.values.values().map(|(_, name)| *name).collect();
        names.sort_unstable();
        f.debug_set().entries(names).finish()
    }
}

/// A state type a handler needs, checked when the worker is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateRequirement {
    /// The type's id.
    pub type_id: TypeId,
    /// The type's name, for errors.
    pub type_name: &'static str,
}

impl StateRequirement {
    /// The requirement of a value of type `T`.
    ///
    /// ```
    /// let r = outbox_core::handlers::StateRequirement::of::<String>();
    /// assert!(r.type_name.ends_with("String"));
    /// ```
    pub fn of<T: 'static>() -> Self {
        Self {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        }
    }
}

/// A `#[handler]` parameter after the event: [`HandlerContext`] or [`State<T>`], built from the
/// handler's context for each call.
///
/// ```
/// use outbox_core::handlers::HandlerArg;
/// use outbox_core::{HandlerContext, State};
/// fn needs<T: HandlerArg>() -> Option<outbox_core::handlers::StateRequirement> { T::required_state() }
/// assert!(needs::<HandlerContext>().is_none());
/// assert!(needs::<State<String>>().is_some());
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler parameter",
    label = "not a handler parameter",
    note = "after the event, a #[handler] takes `HandlerContext` and `State<T>` parameters (state given with `WorkerBuilder::state`)"
)]
pub trait HandlerArg: Sized {
    /// Builds the parameter for one call.
    fn from_context(ctx: &HandlerContext) -> Result<Self, HandlerError>;

    /// The state it needs, checked when the worker is built.
    fn required_state() -> Option<StateRequirement> {
        None
    }
}

impl HandlerArg for HandlerContext {
    fn from_context(ctx: &HandlerContext) -> Result<Self, HandlerError> {
        Ok(ctx.clone())
    }
}

impl<T: Send + Sync + 'static> HandlerArg for State<T> {
    fn from_context(ctx: &HandlerContext) -> Result<Self, HandlerError> {
        ctx.state::<T>().map(State).ok_or_else(|| {
            // Only reachable with a hand-made processor or context: `build()` checks the
            // registry's handlers. Retried, so the event waits for a correctly configured worker.
            HandlerError::retry(format!(
                "no state of type `{}` was given to this worker (WorkerBuilder::state)",
                std::any::type_name::<T>()
            ))
        })
    }

    fn required_state() -> Option<StateRequirement> {
        Some(StateRequirement::of::<T>())
    }
}
