//! Handlers: the context they receive, what they may take and return, and their link-time
//! registration.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::handlers::logs::LogBuffer;
use crate::handlers::state::{StateRequirement, States};
use crate::handlers::transaction::TransactionScope;
use crate::model::error::HandlerError;
use crate::model::event::Event;
use crate::model::logs::{LogEntry, LogLevel};
use crate::model::record::EventRecord;
use crate::store::transactions::{StoreTransaction, TransactionType};

/// What a handler's future resolves to: an optional small JSON result, or a failure.
pub type HandlerResult = Result<Option<serde_json::Value>, HandlerError>;

/// A boxed handler future.
pub type HandlerFuture = Pin<Box<dyn Future<Output = HandlerResult> + Send + 'static>>;

/// The non-generic entry point the `#[handler]` macro generates for each handler.
pub type HandlerFn = fn(Arc<EventRecord>, HandlerContext) -> HandlerFuture;

/// What a handler knows about the delivery it runs in.
///
/// ```
/// use outbox_core::HandlerContext;
/// let ctx = HandlerContext::for_test("UserInvited");
/// assert_eq!(ctx.attempt, 1);
/// assert!(!ctx.cancellation.is_cancelled());
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HandlerContext {
    /// The event id: use it as the idempotency key of side effects.
    pub event_id: Uuid,
    /// The event type.
    pub event_type: String,
    /// The handler's name.
    pub handler: String,
    /// This handler's attempt number for this event, from 1.
    pub attempt: u32,
    /// The event's correlation id.
    pub correlation_id: Option<String>,
    /// Fires when the lease was lost or the processor is shutting down: finish quickly or stop. A
    /// result produced after a lost lease is discarded.
    pub cancellation: CancellationToken,
    /// The state values the worker was given.
    states: States,
    /// Where [`log`](Self::log) writes: the delivery's log, stored with the event.
    logs: LogBuffer,
    /// The store's transactions and the delivery's lease, for transactional handlers (X1).
    transaction: Option<TransactionScope>,
}

impl HandlerContext {
    /// Builds a context (used by processors; handlers receive one).
    pub fn new(
        record: &EventRecord,
        handler: &str,
        attempt: u32,
        cancellation: CancellationToken,
    ) -> Self {
        Self::for_delivery(
            record,
            handler,
            attempt,
            cancellation,
            States::default(),
            LogBuffer::default(),
            None,
        )
    }

    /// A context with everything a processor gives it, built at once (`new` and the `with_`
    /// methods would allocate the default states and log buffer only to replace them).
    pub(crate) fn for_delivery(
        record: &EventRecord,
        handler: &str,
        attempt: u32,
        cancellation: CancellationToken,
        states: States,
        logs: LogBuffer,
        transaction: Option<TransactionScope>,
    ) -> Self {
        Self {
            event_id: record.id,
            event_type: record.event_type.clone(),
            handler: handler.to_owned(),
            attempt,
            correlation_id: record.correlation_id.clone(),
            cancellation,
            states,
            logs,
            transaction,
        }
    }

    /// This context with the worker's state values (processors call it; `State<T>` parameters read
    /// them).
    ///
    /// ```
    /// let mut states = outbox_core::handlers::States::default();
    /// states.insert(String::from("smtp://localhost"));
    /// let ctx = outbox_core::HandlerContext::for_test("UserInvited").with_states(states);
    /// assert_eq!(ctx.state::<String>().as_deref().map(String::as_str), Some("smtp://localhost"));
    /// ```
    #[must_use]
    pub fn with_states(mut self, states: States) -> Self {
        self.states = states;
        self
    }

    /// The worker's state value of type `T`, if it was given one.
    pub fn state<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.states.get::<T>()
    }

    /// A context for calling a handler directly in a unit test.
    pub fn for_test(event_type: &str) -> Self {
        Self {
            event_id: Uuid::now_v7(),
            event_type: event_type.to_owned(),
            handler: "test".to_owned(),
            attempt: 1,
            correlation_id: None,
            cancellation: CancellationToken::new(),
            states: States::default(),
            logs: LogBuffer::default(),
            transaction: None,
        }
    }

    /// This context with the delivery's transaction scope (processors call it: transactional
    /// handlers begin their transaction through it and record their success fenced by its lease).
    #[must_use]
    pub fn with_transaction(mut self, scope: Option<TransactionScope>) -> Self {
        self.transaction = scope;
        self
    }

    /// The delivery's transaction scope, when its store has transactions.
    pub fn transaction_scope(&self) -> Option<&TransactionScope> {
        self.transaction.as_ref()
    }

    /// This context writing its [`log`](Self::log) entries to `logs` (processors call it: the
    /// runtime stores the delivery's entries with the event).
    #[must_use]
    pub fn with_logs(mut self, logs: LogBuffer) -> Self {
        self.logs = logs;
        self
    }

    /// Logs `message` on the event (contract L1): stored with the event under this handler's
    /// results when the outcome is written — whether the handler succeeds, fails, times out or
    /// panics — and shown by `outbox show` and the dashboard. Also emitted as a `tracing` event.
    /// Entries of a delivery whose lease was lost are discarded with its results.
    ///
    /// ```
    /// use outbox_core::HandlerContext;
    /// use outbox_core::model::LogLevel;
    /// let ctx = HandlerContext::for_test("UserInvited");
    /// ctx.log(LogLevel::Info, "rendering the template");
    /// ctx.warn(format!("retrying after {} ms", 250));
    /// ```
    pub fn log(&self, level: LogLevel, message: impl Into<String>) {
        let message = message.into();
        match level {
            LogLevel::Debug => {
                tracing::debug!(handler = %self.handler, attempt = self.attempt, "{}", crate::model::text::untrusted(&message))
            }
            LogLevel::Info => {
                tracing::info!(handler = %self.handler, attempt = self.attempt, "{}", crate::model::text::untrusted(&message))
            }
            LogLevel::Warn => {
                tracing::warn!(handler = %self.handler, attempt = self.attempt, "{}", crate::model::text::untrusted(&message))
            }
            LogLevel::Error => {
                tracing::error!(handler = %self.handler, attempt = self.attempt, "{}", crate::model::text::untrusted(&message))
            }
        }
        self.logs.push(
            &self.handler,
            LogEntry {
                at: chrono::Utc::now(),
                level,
                attempt: self.attempt,
                message,
            },
        );
    }

    /// [`log`](Self::log) at [`LogLevel::Debug`].
    pub fn debug(&self, message: impl Into<String>) {
        self.log(LogLevel::Debug, message);
    }

    /// [`log`](Self::log) at [`LogLevel::Info`].
    pub fn info(&self, message: impl Into<String>) {
        self.log(LogLevel::Info, message);
    }

    /// [`log`](Self::log) at [`LogLevel::Warn`].
    pub fn warn(&self, message: impl Into<String>) {
        self.log(LogLevel::Warn, message);
    }

    /// [`log`](Self::log) at [`LogLevel::Error`].
    pub fn error(&self, message: impl Into<String>) {
        self.log(LogLevel::Error, message);
    }
}

/// What a handler's event parameter may be: a typed [`Event`] (deserialized from the payload; a
/// payload that does not deserialize is a permanent failure) or the raw [`EventRecord`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler's event parameter",
    label = "derive `outbox_core::Event` for this type, or take `EventRecord`",
    note = "handlers take a typed event (`#[derive(Serialize, Deserialize, Event)]`) or the raw `EventRecord`"
)]
pub trait HandlerInput: Sized + Send + 'static {
    /// Extracts the parameter from the stored record.
    fn from_record(record: &Arc<EventRecord>) -> Result<Self, HandlerError>;

    /// The event type a typed parameter declares: a `#[handler]` without `event = "…"` takes it,
    /// and one with it must name the same type (checked at compile time). `None` for raw records.
    const EVENT_TYPE: Option<&'static str> = None;

    /// The event type a typed parameter declares ([`EVENT_TYPE`](Self::EVENT_TYPE)).
    fn declared_event_type() -> Option<&'static str> {
        Self::EVENT_TYPE
    }
}

impl<E: Event> HandlerInput for E {
    const EVENT_TYPE: Option<&'static str> = Some(E::EVENT_TYPE);

    fn from_record(record: &Arc<EventRecord>) -> Result<Self, HandlerError> {
        record.payload.decode::<E>().map_err(|err| {
            HandlerError::permanent(format!(
                "payload of event {} does not deserialize into `{}`: {err}",
                record.id,
                E::EVENT_TYPE
            ))
        })
    }
}

impl HandlerInput for EventRecord {
    fn from_record(record: &Arc<EventRecord>) -> Result<Self, HandlerError> {
        Ok((**record).clone())
    }
}

impl HandlerInput for Arc<EventRecord> {
    fn from_record(record: &Arc<EventRecord>) -> Result<Self, HandlerError> {
        Ok(Arc::clone(record))
    }
}

/// What a handler may return on success: nothing, or a small JSON result stored with its success.
pub trait HandlerOutput {
    /// Converts into the stored result.
    fn into_output(self) -> Option<serde_json::Value>;
}

impl HandlerOutput for () {
    fn into_output(self) -> Option<serde_json::Value> {
        None
    }
}

impl HandlerOutput for serde_json::Value {
    fn into_output(self) -> Option<serde_json::Value> {
        Some(self)
    }
}

impl HandlerOutput for Option<serde_json::Value> {
    fn into_output(self) -> Option<serde_json::Value> {
        self
    }
}

/// A handler registered at link time by `#[handler]` (collected with `inventory`).
///
/// It is `const`-constructible so the macro can submit it as a static.
#[derive(Debug)]
pub struct HandlerRegistration {
    /// The event type it handles.
    pub event_type: &'static str,
    /// Its unique name within that event type.
    pub name: &'static str,
    /// Per-handler attempts override.
    pub max_attempts: Option<u32>,
    /// Per-handler timeout override.
    pub timeout: Option<Duration>,
    /// `file:line` of the definition, for duplicate errors.
    pub location: &'static str,
    /// The generated entry point.
    pub call: HandlerFn,
    /// The event type of its typed parameter, when typed.
    pub declared_event_type: fn() -> Option<&'static str>,
    /// The name its results were stored under before a rename (`renamed_from = "…"`).
    pub renamed_from: Option<&'static str>,
    /// The state types its `State<T>` parameters need.
    pub required_state: fn() -> Vec<StateRequirement>,
    /// The transaction type it runs in, when transactional (contract X1).
    pub transaction: fn() -> Option<TransactionType>,
}

inventory::collect!(HandlerRegistration);

type DynHandlerFn = dyn Fn(Arc<EventRecord>, HandlerContext) -> HandlerFuture + Send + Sync;

/// A handler as the registry holds it: options plus a callable.
///
/// Build one by hand for tests or for platforms without link-time registration (contract H5):
///
/// ```
/// use outbox_core::{Event, Handler, HandlerContext, HandlerError};
///
/// #[derive(serde::Serialize, serde::Deserialize, Event)]
/// struct UserInvited { email: String }
///
/// let handler = Handler::typed("welcome", |event: UserInvited, ctx: HandlerContext| async move {
///     println!("welcome {} ({})", event.email, ctx.event_id);
///     Ok::<_, HandlerError>(())
/// })
/// .with_max_attempts(3);
/// assert_eq!(handler.event_type(), "UserInvited");
/// ```
#[derive(Clone)]
pub struct Handler {
    event_type: String,
    name: String,
    max_attempts: Option<u32>,
    timeout: Option<Duration>,
    location: String,
    declared_event_type: Option<&'static str>,
    renamed_from: Option<String>,
    required_state: Vec<StateRequirement>,
    transaction: Option<TransactionType>,
    call: Arc<DynHandlerFn>,
}

impl std::fmt::Debug for Handler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handler")
            .field("event_type", &self.event_type)
            .field("name", &self.name)
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .field("location", &self.location)
            .field("renamed_from", &self.renamed_from)
            .field("transaction", &self.transaction.map(|t| t.type_name))
            .finish_non_exhaustive()
    }
}

impl Handler {
    /// A batch handler for `event_type` (contract B1): the worker's events of that type are
    /// grouped — up to `max` per call, or whatever arrived within `linger` of the first — and
    /// `f` handles each group in one call, returning one result per item, in order (a result
    /// for each event, recorded as for any handler). Relaying to a broker is the natural case.
    /// Each event still has its own attempts, timeout and retries; a batch that panics or
    /// returns the wrong number of results fails each of its events (retried). Ordering keys
    /// hold: a worker runs one event per key at a time.
    ///
    /// ```
    /// use outbox_core::handlers::BatchItem;
    /// use outbox_core::{Handler, HandlerError};
    /// let relay = Handler::batch("UserInvited", "relay", 100, std::time::Duration::from_millis(5),
    ///     |items: Vec<BatchItem>| async move {
    ///         // publish every item.record.payload in one call here
    ///         items.iter().map(|_| Ok(None)).collect::<Vec<Result<_, HandlerError>>>()
    ///     });
    /// assert_eq!(relay.name(), "relay");
    /// ```
    #[track_caller]
    pub fn batch<F, Fut>(
        event_type: impl Into<String>,
        name: impl Into<String>,
        max: usize,
        linger: Duration,
        f: F,
    ) -> Self
    where
        F: Fn(Vec<crate::handlers::BatchItem>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Vec<HandlerResult>> + Send + 'static,
    {
        let f =
            Arc::new(move |items| -> crate::handlers::batch::BatchFuture { Box::pin(f(items)) });
        let batcher = Arc::new(crate::handlers::batch::Batcher::new(max, linger, f));
        let call = move |record, ctx| batcher.call(record, ctx);
        Self::built(event_type.into(), name.into(), None, Arc::new(call))
    }

    /// A handler with the given call and no limits of its own; its location is the caller's.
    #[track_caller]
    fn built(
        event_type: String,
        name: String,
        declared_event_type: Option<&'static str>,
        call: Arc<DynHandlerFn>,
    ) -> Self {
        Self {
            event_type,
            name,
            max_attempts: None,
            timeout: None,
            location: caller_location(),
            declared_event_type,
            renamed_from: None,
            required_state: Vec::new(),
            transaction: None,
            call,
        }
    }

    /// A handler for `event_type` taking the raw record.
    #[track_caller]
    pub fn raw<F, Fut, O>(event_type: impl Into<String>, name: impl Into<String>, f: F) -> Self
    where
        F: Fn(Arc<EventRecord>, HandlerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
        O: HandlerOutput,
    {
        let call = move |record, ctx| -> HandlerFuture {
            let fut = f(record, ctx);
            Box::pin(async move { fut.await.map(HandlerOutput::into_output) })
        };
        Self::built(event_type.into(), name.into(), None, Arc::new(call))
    }

    /// A handler for the typed event `E` (its payload is deserialized; a bad payload is a permanent
    /// failure).
    #[track_caller]
    pub fn typed<E, F, Fut, O>(name: impl Into<String>, f: F) -> Self
    where
        E: Event,
        F: Fn(E, HandlerContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, HandlerError>> + Send + 'static,
        O: HandlerOutput,
    {
        let f = Arc::new(f);
        let call = move |record: Arc<EventRecord>, ctx| -> HandlerFuture {
            let f = Arc::clone(&f);
            Box::pin(async move {
                let event = E::from_record(&record)?;
                f(event, ctx).await.map(HandlerOutput::into_output)
            })
        };
        Self::built(
            E::EVENT_TYPE.to_owned(),
            name.into(),
            Some(E::EVENT_TYPE),
            Arc::new(call),
        )
    }

    /// A transactional handler for `event_type` taking the raw record (contract X1): each run gets
    /// a transaction of the worker's store (`&mut T`); when `f` succeeds its success is recorded
    /// in that transaction, fenced by the lease, and committed with `f`'s writes. A failure,
    /// timeout, panic or lost lease rolls the writes back. Building a worker whose store does not
    /// give `T` fails. `#[handler(transactional)]` is the usual way to write one.
    ///
    /// The closure returns a boxed future because it borrows the transaction:
    ///
    /// ```
    /// use outbox_core::{Handler, HandlerError};
    /// use outbox_core::store::StoreTransaction;
    /// # struct PgTx; impl StoreTransaction for PgTx {}
    /// # impl PgTx { async fn insert(&mut self, _id: outbox_core::Uuid) {} }
    ///
    /// let record_invite = Handler::transactional("UserInvited", "record_invite", |record, tx: &mut PgTx, _ctx| {
    ///     Box::pin(async move {
    ///         tx.insert(record.id).await; // e.g. sqlx::query("INSERT …").execute(&mut **tx)
    ///         Ok::<_, HandlerError>(())
    ///     })
    /// });
    /// assert!(record_invite.transaction().is_some());
    /// ```
    #[track_caller]
    pub fn transactional<T, F, O>(
        event_type: impl Into<String>,
        name: impl Into<String>,
        f: F,
    ) -> Self
    where
        T: StoreTransaction,
        F: for<'tx> Fn(
                Arc<EventRecord>,
                &'tx mut T,
                HandlerContext,
            )
                -> Pin<Box<dyn Future<Output = Result<O, HandlerError>> + Send + 'tx>>
            + Send
            + Sync
            + 'static,
        O: HandlerOutput,
    {
        let f = Arc::new(f);
        let call = move |record: Arc<EventRecord>, ctx: HandlerContext| -> HandlerFuture {
            let f = Arc::clone(&f);
            Box::pin(async move {
                let (mut tx, guard) = crate::handlers::transaction::begin::<T>(&ctx).await?;
                let result = f(record, &mut tx, ctx.clone())
                    .await
                    .map(HandlerOutput::into_output);
                crate::handlers::transaction::finish(&ctx, (tx, guard), result).await
            })
        };
        let mut handler = Self::built(event_type.into(), name.into(), None, Arc::new(call));
        handler.transaction = Some(TransactionType::of::<T>());
        handler
    }

    /// The transaction type it runs in, when transactional.
    pub fn transaction(&self) -> Option<TransactionType> {
        self.transaction
    }

    /// The handler a `#[handler]` registration describes.
    pub fn from_registration(registration: &'static HandlerRegistration) -> Self {
        let call = registration.call;
        Self {
            event_type: registration.event_type.to_owned(),
            name: registration.name.to_owned(),
            max_attempts: registration.max_attempts,
            timeout: registration.timeout,
            location: registration.location.to_owned(),
            declared_event_type: (registration.declared_event_type)(),
            renamed_from: registration.renamed_from.map(str::to_owned),
            required_state: (registration.required_state)(),
            transaction: (registration.transaction)(),
            call: Arc::new(call),
        }
    }

    /// Overrides the global attempts limit for this handler.
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = Some(attempts);
        self
    }

    /// Overrides the global timeout for this handler.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Declares the name this handler's results were stored under before it was renamed: results
    /// under `old` are moved to the current name when an event is next delivered, so a rename does
    /// not re-run a handler that already succeeded nor strand one that failed.
    ///
    /// ```
    /// use outbox_core::{Handler, HandlerError};
    /// let handler = Handler::raw("UserInvited", "send_email", |_r, _c| async { Ok::<_, HandlerError>(()) })
    ///     .with_renamed_from("mailer::send_email");
    /// assert_eq!(handler.renamed_from(), Some("mailer::send_email"));
    /// ```
    pub fn with_renamed_from(mut self, old: impl Into<String>) -> Self {
        self.renamed_from = Some(old.into());
        self
    }

    /// The former name, when renamed.
    pub fn renamed_from(&self) -> Option<&str> {
        self.renamed_from.as_deref()
    }

    /// Declares a state type this handler reads (`ctx.state::<T>()`), so that building a worker
    /// without it fails (`#[handler]` declares its `State<T>` parameters itself).
    ///
    /// ```
    /// use outbox_core::{Handler, HandlerError};
    /// let handler = Handler::raw("UserInvited", "send_email", |_r, ctx| async move {
    ///     let from = ctx.state::<String>().ok_or_else(|| HandlerError::retry("no sender"))?;
    ///     println!("from {from}");
    ///     Ok::<_, HandlerError>(())
    /// })
    /// .requires_state::<String>();
    /// assert_eq!(handler.required_state().len(), 1);
    /// ```
    pub fn requires_state<T: Send + Sync + 'static>(mut self) -> Self {
        self.required_state.push(StateRequirement::of::<T>());
        self
    }

    /// The state types this handler needs.
    pub fn required_state(&self) -> &[StateRequirement] {
        &self.required_state
    }

    /// The event type handled.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The handler's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its attempts override.
    pub fn max_attempts(&self) -> Option<u32> {
        self.max_attempts
    }

    /// Its timeout override.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Where it was defined.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The event type its typed parameter declares, if typed.
    pub fn declared_event_type(&self) -> Option<&'static str> {
        self.declared_event_type
    }

    /// Calls it.
    pub fn call(&self, record: Arc<EventRecord>, ctx: HandlerContext) -> HandlerFuture {
        (self.call)(record, ctx)
    }
}

#[track_caller]
fn caller_location() -> String {
    let loc = std::panic::Location::caller();
    format!("{}:{}", loc.file(), loc.line())
}
