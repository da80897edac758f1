//! A web dashboard for an outbox: an [axum](https://docs.rs/axum) router a service mounts.
//!
//! - **Overview**: counts by status and by event type, the lag, and throughput (events finished
//!   per second) over the last minutes as a chart; the counts refresh every few seconds.
//! - **Dead letters**, with re-queue (one, or all) and purge buttons.
//! - **Event detail**: the record, every handler's state, and why it is not running now
//!   ([`outbox_core::ops::explain`]).
//!
//! Server-rendered HTML with a little JavaScript; no build step. Mutating actions are `POST`s
//! carrying a CSRF token (double-submit: a `SameSite=Strict` cookie and a form field that must
//! match). [`Dashboard::read_only`] hides and refuses them. Authentication is the service's own:
//! wrap the router in its middleware.
//!
//! ```no_run
//! use std::sync::Arc;
//! use outbox_dashboard::Dashboard;
//!
//! # async fn demo(store: Arc<dyn outbox_core::Store>) -> std::io::Result<()> {
//! let app = axum::Router::new().nest(
//!     "/admin/outbox",
//!     Dashboard::new(store).base_path("/admin/outbox").router(),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

mod csrf;
mod history;
mod html;
mod pages;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use outbox_core::Store;

pub use history::Sample;

/// Settings of a dashboard; [`router`](Dashboard::router) builds it.
///
/// ```
/// # fn demo(store: std::sync::Arc<dyn outbox_core::Store>) {
/// let dashboard = outbox_dashboard::Dashboard::new(store)
///     .base_path("/ops/outbox")
///     .read_only(true)
///     .sample_every(std::time::Duration::from_secs(5));
/// # let _ = dashboard;
/// # }
/// ```
#[derive(Clone)]
pub struct Dashboard {
    store: Arc<dyn Store>,
    base: String,
    read_only: bool,
    sample_every: Duration,
    samples_kept: usize,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard")
            .field("base", &self.base)
            .field("read_only", &self.read_only)
            .field("sample_every", &self.sample_every)
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// A dashboard of `store`, mounted at the root, with actions enabled, sampling throughput
    /// every 10 s and keeping 10 minutes of samples.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            base: String::new(),
            read_only: false,
            sample_every: Duration::from_secs(10),
            samples_kept: 60,
        }
    }

    /// The path the router is nested at (`"/admin/outbox"`), so links and redirects point inside
    /// it. A trailing slash is ignored.
    #[must_use]
    pub fn base_path(mut self, base: impl Into<String>) -> Self {
        self.base = base.into().trim_end_matches('/').to_owned();
        self
    }

    /// Shows no action buttons and answers every `POST` with 403.
    #[must_use]
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }

    /// How often the throughput chart samples [`InspectStore::stats`](outbox_core::store::InspectStore::stats) (default 10 s; at least 100 ms).
    /// Each sample costs one `stats()` call, which on a table keeping many processed events is a
    /// scan: keep this in seconds.
    #[must_use]
    pub fn sample_every(mut self, every: Duration) -> Self {
        self.sample_every = every.max(Duration::from_millis(100));
        self
    }

    /// The router: `GET /` (overview), `GET /dead`, `GET /events/{id}`, `GET /api/stats` (JSON),
    /// `POST /dead/requeue`, `POST /dead/requeue-all`, `POST /dead/purge`. Starts the throughput
    /// sampler, which stops when the router is dropped; call it inside a Tokio runtime.
    pub fn router(self) -> Router {
        let state = Arc::new(pages::AppState {
            store: self.store,
            base: self.base,
            read_only: self.read_only,
            history: history::History::new(self.samples_kept),
        });
        history::spawn_sampler(Arc::downgrade(&state), self.sample_every);
        Router::new()
            .route("/", get(pages::overview))
            .route("/api/stats", get(pages::api_stats))
            .route("/dead", get(pages::dead_letters))
            .route("/corrupt", get(pages::corrupt))
            .route("/events/{id}", get(pages::event))
            .route("/dead/requeue", post(pages::requeue))
            .route("/dead/requeue-all", post(pages::requeue_all))
            .route("/dead/purge", post(pages::purge))
            .with_state(state)
    }
}
