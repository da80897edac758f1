//! Handlers: what an application registers to act on events — the [`Handler`] and the
//! [`HandlerContext`] it receives, the [`Registry`] that holds them by event type, application
//! [`State`], batch handlers (B1), durable outcome targets (W2), per-event logs (L1) and the
//! handler side of transactional handlers (X1).
//!
//! Most applications write `#[outbox_core::handler]` functions and never name this module;
//! building handlers at run time and testing them does.
//!
//! ```
//! use outbox_core::handlers::{Handler, Registry};
//!
//! let registry = Registry::builder()
//!     .handler(Handler::raw("UserInvited", "send_email", |_record, _ctx| async { Ok::<_, outbox_core::HandlerError>(()) }))
//!     .build()
//!     .unwrap();
//! assert_eq!(registry.handlers_for("UserInvited").len(), 1);
//! ```

pub(crate) mod batch;
pub(crate) mod handler;
pub(crate) mod logs;
pub(crate) mod registry;
pub(crate) mod state;
pub(crate) mod targets;
pub(crate) mod transaction;

pub use batch::{BatchFuture, BatchItem};
pub use handler::{
    Handler, HandlerContext, HandlerFuture, HandlerInput, HandlerOutput, HandlerResult,
};
pub use logs::LogBuffer;
pub use registry::{Coverage, Registry, RegistryBuilder};
pub use state::{HandlerArg, State, StateRequirement, States};
pub use targets::{
    Notification, Notifiers, NotifyFuture, TARGET_EVENT_TYPE, target_event, with_target,
};
pub use tokio_util::sync::CancellationToken;
pub use transaction::{TransactionGuard, TransactionScope};
