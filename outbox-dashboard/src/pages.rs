//! The pages and actions.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::Form;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header::{LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use chrono::Utc;
use outbox_core::{EventRecord, EventStatus, Store, StoreError, StoreExt};
use serde_json::json;
use uuid::Uuid;

use crate::csrf;
use crate::history::History;
use crate::html::{duration, esc, page, table, td, td_num, throughput_chart, time};

/// The most dead letters a page lists, and `requeue-all` re-queues per click.
const DEAD_PAGE: usize = 200;

/// What every page shares.
pub(crate) struct AppState {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) base: String,
    pub(crate) read_only: bool,
    pub(crate) history: History,
}

type Shared = State<Arc<AppState>>;

/// A page's answer: the HTML, and the CSRF cookie when the browser had none.
struct PageResponse {
    html: String,
    new_cookie: Option<String>,
}

impl IntoResponse for PageResponse {
    fn into_response(self) -> Response {
        let mut response = Html(self.html).into_response();
        if let Some(cookie) = self.new_cookie.and_then(|c| HeaderValue::from_str(&c).ok()) {
            response.headers_mut().insert(SET_COOKIE, cookie);
        }
        response
    }
}

/// The token for this request's forms: the browser's, or a new one to set.
fn token(state: &AppState, headers: &HeaderMap) -> (String, Option<String>) {
    match csrf::from_cookie(headers) {
        Some(token) => (token, None),
        None => {
            let token = csrf::new_token();
            let cookie = csrf::set_cookie(&token, &state.base);
            (token, Some(cookie))
        }
    }
}

/// An event whose stored data does not decode (C11): what is wrong with it and what happens to it,
/// instead of an error page.
fn undecodable(state: &AppState, id: Uuid, reason: &str) -> Response {
    let body = format!(
        "<p class=\"why\" id=\"why\">This event's stored data does not decode: <code>{}</code></p>\
         <p>It is not delivered: the next claim that reaches it sets it aside, and it is then \
         listed under <a href=\"{}/corrupt\">Set aside</a>. Fix the stored data, then re-queue it \
         (<code>outbox corrupt requeue {}</code>).</p>",
        esc(reason),
        esc(&state.base),
        esc(&id.to_string()),
    );
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        Html(page(
            &state.base,
            "Event does not decode",
            state.read_only,
            &body,
            "",
        )),
    )
        .into_response()
}

/// Events set aside because they do not decode (C11), oldest first, with their reasons.
pub(crate) async fn corrupt(State(state): Shared) -> Response {
    let set_aside = match state.store.corrupt_events(DEAD_PAGE).await {
        Ok(set_aside) => set_aside,
        Err(err) => return failure(&state, &err),
    };
    let rows: Vec<Vec<String>> = set_aside
        .iter()
        .map(|c| {
            vec![
                td(&c.id),
                td(c.event_type.as_deref().unwrap_or("")),
                td(&c.reason),
                td(&time(c.set_aside_at)),
            ]
        })
        .collect();
    let mut body = format!(
        "<p id=\"corrupt-count\">{} event(s) set aside because they do not decode (at most \
         {DEAD_PAGE} shown). Fix the stored data, then re-queue them with \
         <code>outbox corrupt requeue &lt;id&gt;</code>.</p>",
        set_aside.len()
    );
    body.push_str(&table(
        "corrupt",
        &["id", "type", "reason", "set aside at"],
        &rows,
    ));
    Html(page(&state.base, "Set aside", state.read_only, &body, "")).into_response()
}

/// A store failure as a page.
fn failure(state: &AppState, err: &StoreError) -> Response {
    let body = format!(
        "<p>The store answered with an error:</p><pre>{}</pre>",
        esc(&err.to_string())
    );
    let status = if err.is_transient() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    (
        status,
        Html(page(&state.base, "Error", state.read_only, &body, "")),
    )
        .into_response()
}

/// A hidden CSRF field and a button, posting `fields` to `action`.
fn action_form(
    state: &AppState,
    token: &str,
    action: &str,
    fields: &[(&str, &str)],
    button: (&str, &str),
) -> String {
    let mut form = format!(
        "<form class=\"inline\" method=\"post\" action=\"{}{}\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(&state.base),
        esc(action),
        esc(token)
    );
    for (name, value) in fields {
        let _ = write!(
            form,
            "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
            esc(name),
            esc(value)
        );
    }
    let _ = write!(
        form,
        "<button type=\"submit\" id=\"{}\">{}</button></form>",
        esc(button.0),
        esc(button.1)
    );
    form
}

pub(crate) async fn overview(State(state): Shared, headers: HeaderMap) -> Response {
    let (stats, by_type) = match tokio::try_join!(state.store.stats(), state.store.stats_by_type())
    {
        Ok(both) => both,
        Err(err) => return failure(&state, &err),
    };
    let (_, new_cookie) = token(&state, &headers);
    let totals = table(
        "totals",
        &["status", "events"],
        &[
            vec![td("pending"), td_num("total-pending", stats.pending)],
            vec![td("  due now"), td_num("total-due", stats.due)],
            vec![td("  leased"), td_num("total-leased", stats.leased)],
            vec![
                td("processed (kept)"),
                td_num("total-processed", stats.processed),
            ],
            vec![td("dead"), td_num("total-dead", stats.dead)],
            vec![
                td("corrupt (set aside)"),
                td_num("total-corrupt", stats.corrupt),
            ],
            vec![
                td("lag (oldest due event)"),
                format!(
                    "<td class=\"n\" id=\"lag\">{}</td>",
                    duration(stats.oldest_due_age)
                ),
            ],
        ]
        .into_iter()
        .chain(stats.held_back.map(|held| {
            vec![
                td(if held.is_holding_back() {
                    "oldest open snapshot (holding cleanup back!)"
                } else {
                    "oldest open snapshot"
                }),
                format!(
                    "<td class=\"n\" id=\"oldest-snapshot\">{}</td>",
                    duration(held.oldest_snapshot_age)
                ),
            ]
        }))
        .chain(
            stats
                .held_back
                .map(|held| vec![td("dead row versions"), td_num("dead-rows", held.dead_rows)]),
        )
        .collect::<Vec<_>>(),
    );
    let rows: Vec<Vec<String>> = by_type
        .iter()
        .map(|t| {
            vec![
                td(&t.event_type),
                td_num("", t.pending),
                td_num("", t.due),
                td_num("", t.leased),
                td_num("", t.dead),
                format!("<td class=\"n\">{}</td>", duration(t.oldest_due_age)),
            ]
        })
        .collect();
    let types = table(
        "by-type",
        &["event type", "pending", "due", "leased", "dead", "lag"],
        &rows,
    );
    let body = format!(
        "<h2>By status</h2>{totals}<h2>By event type</h2>{types}\
         <h2>Throughput (events finished per second)</h2>{}",
        throughput_chart(&state.history.rates())
    );
    // Refreshes the totals every 5 s from the JSON endpoint.
    let script = format!(
        "<script>setInterval(async()=>{{try{{const r=await fetch('{}/api/stats');\
         if(!r.ok)return;const s=await r.json();\
         for(const k of ['pending','due','leased','processed','dead','corrupt'])\
         {{const e=document.getElementById('total-'+k);if(e)e.textContent=s[k];}}}}catch(e){{}}}},5000);</script>",
        esc(&state.base)
    );
    PageResponse {
        html: page(&state.base, "Overview", state.read_only, &body, &script),
        new_cookie,
    }
    .into_response()
}

pub(crate) async fn api_stats(State(state): Shared) -> Response {
    match state.store.stats().await {
        Ok(s) => Json(s.to_json()).into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": err.to_string() })),
        )
            .into_response(),
    }
}

pub(crate) async fn dead_letters(State(state): Shared, headers: HeaderMap) -> Response {
    let dead = match state.store.dead_letters(DEAD_PAGE).await {
        Ok(dead) => dead,
        Err(err) => return failure(&state, &err),
    };
    let (token, new_cookie) = token(&state, &headers);
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|r| {
            let id = r.id.to_string();
            let (handler, error) = r.give_up_reason().unwrap_or(("", ""));
            let mut row = vec![
                format!(
                    "<td><a href=\"{}/events/{id}\">{id}</a></td>",
                    esc(&state.base)
                ),
                td(&r.event_type),
                td(handler),
                td(error),
                td(&time(r.processed_at)),
            ];
            if !state.read_only {
                row.push(format!(
                    "<td>{}</td>",
                    action_form(
                        &state,
                        &token,
                        "/dead/requeue",
                        &[("id", &id)],
                        (&format!("requeue-{id}"), "Requeue")
                    )
                ));
            }
            row
        })
        .collect();
    let mut headers_row = vec!["id", "type", "handler", "error", "dead since"];
    if !state.read_only {
        headers_row.push("");
    }
    let mut body = format!(
        "<p id=\"dead-count\">{} dead letter(s) shown (at most {DEAD_PAGE}).</p>",
        dead.len()
    );
    // A dead letter that does not decode is left out of the listing (C11): say so.
    if dead.len() < DEAD_PAGE {
        // Per-type counts read dead letters only, not every processed event as `stats` does.
        if let Ok(types) = state.store.stats_by_type().await {
            let total: u64 = types.iter().map(|t| t.dead).sum();
            let missing = total.saturating_sub(dead.len() as u64);
            if missing > 0 {
                let _ = write!(
                    body,
                    "<p class=\"warn\" id=\"dead-undecodable\">{missing} dead letter(s) do not \
                     decode and are not listed; the store's log names them.</p>"
                );
            }
        }
    }
    if !state.read_only && !dead.is_empty() {
        body.push_str(&action_form(
            &state,
            &token,
            "/dead/requeue-all",
            &[],
            ("requeue-all", "Requeue all shown"),
        ));
        let _ = write!(
            body,
            " <form class=\"inline\" method=\"post\" action=\"{}/dead/purge\">\
             <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
             Purge dead letters older than <input name=\"days\" size=\"3\" value=\"30\"> days \
             <button type=\"submit\" id=\"purge\">Purge</button></form>",
            esc(&state.base),
            esc(&token)
        );
    }
    body.push_str(&table("dead", &headers_row, &rows));
    PageResponse {
        html: page(&state.base, "Dead letters", state.read_only, &body, ""),
        new_cookie,
    }
    .into_response()
}

// Long by design: one page's HTML template, in the order it renders.
pub(crate) async fn event(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = Uuid::parse_str(&id) else {
        return not_found(&state, "That is not an event id.");
    };
    let record = match state.store.get(id).await {
        Ok(Some(record)) => record,
        Ok(None) => return not_found(&state, "No event with that id."),
        Err(StoreError::Corrupt { message, .. }) => return undecodable(&state, id, &message),
        Err(err) => return failure(&state, &err),
    };
    let head = state.store.key_head_of(&record).await.ok().flatten();
    let why = outbox_core::ops::explain(&record, head.as_ref(), Utc::now());
    let (token, new_cookie) = token(&state, &headers);
    let mut body = format!("<p class=\"why\" id=\"why\">{}</p><ul>", esc(&why.summary));
    for line in &why.details {
        let _ = write!(body, "<li>{}</li>", esc(line));
    }
    body.push_str("</ul>");
    if record.status == EventStatus::Dead && !state.read_only {
        let id = record.id.to_string();
        body.push_str(&action_form(
            &state,
            &token,
            "/dead/requeue",
            &[("id", &id), ("back", "event")],
            ("requeue", "Requeue"),
        ));
    }
    body.push_str(&record_table(&record));
    let results: Vec<Vec<String>> = record
        .handler_results
        .iter()
        .map(|(name, s)| {
            vec![
                td(name),
                td(&time(s.succeeded_at)),
                td_num("", s.attempts),
                td(if s.gave_up { "yes" } else { "no" }),
                td(s.last_error.as_deref().unwrap_or("")),
                td(&s.output.as_ref().map(|o| o.to_string()).unwrap_or_default()),
            ]
        })
        .collect();
    body.push_str("<h2>Handlers</h2>");
    body.push_str(&table(
        "handlers",
        &[
            "handler",
            "succeeded",
            "attempts",
            "gave up",
            "last error",
            "output",
        ],
        &results,
    ));
    let mut logs: Vec<(&str, &outbox_core::model::LogEntry)> = record
        .handler_results
        .iter()
        .flat_map(|(name, state)| state.logs.iter().map(move |e| (name.as_str(), e)))
        .collect();
    logs.sort_by_key(|(_, e)| e.at);
    let log_rows: Vec<Vec<String>> = logs
        .iter()
        .map(|(handler, e)| {
            vec![
                td(&time(Some(e.at))),
                td(e.level.as_str()),
                td(&format!("{handler} #{}", e.attempt)),
                td(&e.message),
            ]
        })
        .collect();
    let dropped: u32 = record
        .handler_results
        .values()
        .map(|s| s.logs_dropped)
        .sum();
    body.push_str("<h2>Log</h2>");
    if dropped > 0 {
        let _ = write!(body, "<p>{dropped} older entries dropped.</p>");
    }
    body.push_str(&table(
        "logs",
        &["time", "level", "handler", "message"],
        &log_rows,
    ));
    let pretty = serde_json::to_string_pretty(&record.payload).unwrap_or_default();
    let _ = write!(body, "<h2>Payload</h2><pre>{}</pre>", esc(&pretty));
    PageResponse {
        html: page(
            &state.base,
            &format!("Event {}", record.id),
            state.read_only,
            &body,
            "",
        ),
        new_cookie,
    }
    .into_response()
}

fn record_table(r: &EventRecord) -> String {
    let dash = |s: &Option<String>| s.clone().unwrap_or_else(|| "-".to_owned());
    let rows = vec![
        vec![td("status"), format!("<td id=\"status\">{}</td>", r.status)],
        vec![td("type"), td(&r.event_type)],
        vec![td("attempts"), td_num("", r.attempts)],
        vec![td("created"), td(&time(Some(r.created_at)))],
        vec![td("available"), td(&time(Some(r.available_at)))],
        vec![td("back-off until"), td(&time(r.backoff_until))],
        vec![td("finished"), td(&time(r.processed_at))],
        vec![td("leased by"), td(&dash(&r.locked_by))],
        vec![td("lease until"), td(&time(r.locked_until))],
        vec![td("ordering key"), td(&dash(&r.ordering_key))],
        vec![td("correlation id"), td(&dash(&r.correlation_id))],
    ];
    table("record", &["field", "value"], &rows)
}

fn not_found(state: &AppState, message: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(page(
            &state.base,
            "Not found",
            state.read_only,
            &format!("<p>{}</p>", esc(message)),
            "",
        )),
    )
        .into_response()
}

/// Refuses the action unless allowed and the CSRF token matches.
fn check(
    state: &AppState,
    headers: &HeaderMap,
    form: &HashMap<String, String>,
) -> Option<Response> {
    if state.read_only {
        return Some((StatusCode::FORBIDDEN, "the dashboard is read-only").into_response());
    }
    if !csrf::matches(headers, form.get("csrf").map(String::as_str)) {
        return Some(
            (
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: reload the page and try again",
            )
                .into_response(),
        );
    }
    None
}

fn redirect(to: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(location) = HeaderValue::from_str(to) {
        response.headers_mut().insert(LOCATION, location);
    }
    response
}

pub(crate) async fn requeue(
    State(state): Shared,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = check(&state, &headers, &form) {
        return refused;
    }
    let Some(id) = form.get("id").and_then(|id| Uuid::parse_str(id).ok()) else {
        return (StatusCode::BAD_REQUEST, "the form has no valid event id").into_response();
    };
    match state.store.requeue_dead(id).await {
        Ok(done) => {
            tracing::info!(%id, requeued = done, "dashboard: requeue");
            if form.get("back").map(String::as_str) == Some("event") {
                redirect(&format!("{}/events/{id}", state.base))
            } else {
                redirect(&format!("{}/dead", state.base))
            }
        }
        Err(err) => failure(&state, &err),
    }
}

pub(crate) async fn requeue_all(
    State(state): Shared,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = check(&state, &headers, &form) {
        return refused;
    }
    let dead = match state.store.dead_letters(DEAD_PAGE).await {
        Ok(dead) => dead,
        Err(err) => return failure(&state, &err),
    };
    for record in dead {
        if let Err(err) = state.store.requeue_dead(record.id).await {
            return failure(&state, &err);
        }
    }
    redirect(&format!("{}/dead", state.base))
}

pub(crate) async fn purge(
    State(state): Shared,
    headers: HeaderMap,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    if let Some(refused) = check(&state, &headers, &form) {
        return refused;
    }
    let Some(days) = form.get("days").and_then(|d| d.trim().parse::<u32>().ok()) else {
        return (StatusCode::BAD_REQUEST, "days must be a whole number").into_response();
    };
    let older_than = Utc::now() - chrono::Duration::days(i64::from(days));
    match state.store.purge_dead(older_than).await {
        Ok(n) => {
            tracing::info!(deleted = n, days, "dashboard: purged dead letters");
            redirect(&format!("{}/dead", state.base))
        }
        Err(err) => failure(&state, &err),
    }
}
