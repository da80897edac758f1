//! The HTTP API: `POST /invite`, `GET /outbox/stats`, `GET /outbox/dead`, `GET /healthz`,
//! `GET /metrics` (Prometheus), and the outbox dashboard at `/admin/outbox` (basic auth).

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use metrics_exporter_prometheus::PrometheusHandle;
use outbox_core::prelude::*;
use outbox_core::{NewEvent, Outcome, StoreExt};
use outbox_dashboard::Dashboard;
use outbox_postgres::PgStore;
use serde::Deserialize;
use serde_json::json;
use sqlx::PgPool;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use user_invite_handlers::UserInvited;
use uuid::Uuid;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    /// The service's database.
    pub(crate) pool: PgPool,
    /// The outbox in that database.
    pub(crate) store: PgStore,
    /// The schema of the `users` table.
    pub(crate) schema: String,
}

/// The service's routes; the dashboard at `/admin/outbox` only with an admin password.
pub(crate) fn router(
    state: AppState,
    prometheus: PrometheusHandle,
    admin_password: Option<String>,
) -> Router {
    let mut app = Router::new()
        .route("/invite", post(invite))
        .route("/outbox/stats", get(stats))
        .route("/outbox/dead", get(dead))
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let prometheus = prometheus.clone();
                async move { prometheus.render() }
            }),
        )
        .with_state(state.clone());
    if let Some(password) = admin_password {
        // The dashboard is the outbox's; who may see it is the service's business: here, HTTP
        // basic authentication as `admin`.
        let dashboard = Dashboard::new(Arc::new(state.store))
            .base_path(DASHBOARD)
            .router()
            .layer(middleware::from_fn_with_state(
                Arc::new(format!(
                    "Basic {}",
                    BASE64.encode(format!("admin:{password}"))
                )),
                require_admin,
            ));
        app = app.nest(DASHBOARD, dashboard);
    }
    app
}

/// Where the dashboard is mounted.
const DASHBOARD: &str = "/admin/outbox";

/// Lets a request through when it carries the admin's basic credentials; otherwise 401 with the
/// challenge that makes a browser ask for them.
async fn require_admin(
    State(expected): State<Arc<String>>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    if given == Some(expected.as_str()) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Basic realm=\"outbox\"")],
        "authentication required",
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    email: String,
}

/// An error answer: a status and a JSON body `{"error": …}`.
#[derive(Debug)]
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

fn internal(context: &str, err: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %err, "{context}");
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("{context}; try again"),
    )
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The longest `?wait=` a request may ask for.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// `POST /invite {"email": …}`: inserts the user and enqueues `UserInvited` in one transaction.
/// 201 with the ids; 400 for a malformed body; 409 when the email is already invited (nothing is
/// enqueued then). The `x-correlation-id` header (or a fresh id) travels with the event, and so
/// does the trace context of a `traceparent` header. With `?wait=2s` (at most 30 s) the answer
/// waits for the handlers: 201 with `"outcome": "processed"` and their outputs (or `"dead"` and
/// the reason) when they finish in time, 202 with `"outcome": "pending"` otherwise.
// Long by design: an example read top to bottom, the whole request in one place.
async fn invite(
    State(state): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let wait = match query.get("wait") {
        None => None,
        Some(text) => match humantime::parse_duration(text) {
            Ok(wait) if wait <= MAX_WAIT => Some(wait),
            Ok(_) => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("wait={text}: at most {}s", MAX_WAIT.as_secs()),
                ));
            }
            Err(e) => {
                return Err(ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("wait={text}: {e} (for example wait=2s)"),
                ));
            }
        },
    };
    let correlation_id = headers
        .get("x-correlation-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| Uuid::now_v7().to_string(), str::to_owned);
    let span = tracing::info_span!("invite", correlation_id = %correlation_id);
    // A caller's W3C trace context makes this request (and, through the event, its handlers) part
    // of the caller's trace.
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&crate::telemetry::HeaderExtractor(&headers))
    });
    let _ = span.set_parent(parent);
    async move {
        let request: InviteRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"email\": \"…\"}}: {e}"),
            )
        })?;
        let email = request.email.trim().to_lowercase();
        if !valid_email(&email) {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                format!("not an email address: {:?}", request.email),
            ));
        }
        let mut tx = state
            .pool
            .begin()
            .await
            .map_err(|e| internal("database unavailable", e))?;
        let user_id: Option<i64> = sqlx::query_scalar(&format!(
            "INSERT INTO {}.users (email) VALUES ($1) ON CONFLICT (email) DO NOTHING RETURNING id",
            state.schema
        ))
        .bind(&email)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| internal("inserting the user failed", e))?;
        let Some(user_id) = user_id else {
            // Dropping the transaction rolls it back: nothing was written.
            tracing::info!(%email, "already invited");
            return Err(ApiError(
                StatusCode::CONFLICT,
                format!("{email} is already invited"),
            ));
        };
        let event = NewEvent::from_event(&UserInvited {
            user_id,
            email: email.clone(),
        })
        .map_err(|e| internal("encoding the event failed", e))?
        .correlation_id(correlation_id.clone());
        let enqueued = state
            .store
            .enqueue_in(&mut tx, event)
            .await
            .map_err(|e| internal("enqueueing the event failed", e))?;
        tx.commit()
            .await
            .map_err(|e| internal("commit failed", e))?;
        tracing::info!(%email, user_id, event_id = %enqueued.id, "user invited");
        let mut answer = json!({
            "user_id": user_id,
            "event_id": enqueued.id,
            "correlation_id": correlation_id,
        });
        let Some(wait) = wait else {
            return Ok((StatusCode::CREATED, Json(answer)));
        };
        let outcome = state
            .store
            .wait_for(enqueued.id, wait)
            .await
            .map_err(|e| internal("reading the outcome failed", e))?;
        let status = match &outcome {
            Outcome::Processed(_) | Outcome::Deleted => {
                answer["outcome"] = json!("processed");
                answer["outputs"] = json!(outcome.outputs());
                StatusCode::CREATED
            }
            Outcome::Dead(record) => {
                answer["outcome"] = json!("dead");
                answer["reason"] = json!(record.give_up_reason().map(|(h, e)| format!("{h}: {e}")));
                StatusCode::CREATED
            }
            _ => {
                answer["outcome"] = json!("pending");
                StatusCode::ACCEPTED
            }
        };
        Ok((status, Json(answer)))
    }
    .instrument(span)
    .await
}

/// `GET /outbox/stats`: counts by state and the lag of the oldest due event.
async fn stats(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let stats = state
        .store
        .stats()
        .await
        .map_err(|e| internal("reading outbox stats failed", e))?;
    Ok(Json(stats.to_json()))
}

/// `GET /outbox/dead`: up to 100 dead letters, with each handler's last error.
async fn dead(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let dead = state
        .store
        .dead_letters(100)
        .await
        .map_err(|e| internal("listing dead letters failed", e))?;
    Ok(Json(json!({ "dead": dead })))
}

#[cfg(test)]
mod tests {
    use super::valid_email;

    #[test]
    fn emails_are_checked_for_shape_only() {
        assert!(valid_email("ada@example.com"));
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a da@example.com",
            "ada@.com",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
    }
}
