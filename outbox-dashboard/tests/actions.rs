//! The dashboard's actions without a browser: a read-only dashboard shows no buttons and refuses
//! every `POST`; a writable one refuses a `POST` whose CSRF token does not match its cookie, and
//! accepts one that does. Against a real SQLite store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use outbox_core::model::HandlerResults;
use outbox_core::prelude::*;
use outbox_core::store::{ClaimRequest, Completion};
use outbox_core::{EventStatus, NewEvent, StoreExt};
use outbox_dashboard::Dashboard;
use outbox_sqlite::SqliteStore;
use tower::ServiceExt;
use uuid::Uuid;

/// A store holding one dead letter; its id.
async fn store_with_a_dead_letter(dir: &tempfile::TempDir) -> (SqliteStore, Uuid) {
    let store = SqliteStore::open(dir.path().join("actions.db"))
        .await
        .expect("a store");
    store.migrate().await.expect("migrate");
    store
        .enqueue(NewEvent::new("dash.Dead", serde_json::json!({})))
        .await
        .expect("enqueue");
    let claimed = store
        .claim(&ClaimRequest::new("test", 1, Duration::from_secs(30)))
        .await
        .expect("claim");
    let dead = Completion {
        status: EventStatus::Dead,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: None,
    };
    store
        .complete(&claimed[0].lease, dead)
        .await
        .expect("complete");
    (store, claimed[0].record.id)
}

async fn body_text(response: axum::response::Response) -> String {
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn post(path: &str, cookie: Option<&str>, form: &str) -> Request<Body> {
    let mut request =
        Request::post(path).header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if let Some(cookie) = cookie {
        request = request.header(header::COOKIE, cookie);
    }
    request
        .body(Body::from(form.to_owned()))
        .expect("a request")
}

#[tokio::test]
async fn read_only_shows_no_actions_and_refuses_posts() {
    let dir = tempfile::tempdir().expect("a directory");
    let (store, id) = store_with_a_dead_letter(&dir).await;
    let app = Dashboard::new(Arc::new(store.clone()))
        .read_only(true)
        .router();
    let page = app
        .clone()
        .oneshot(
            Request::get("/dead")
                .body(Body::empty())
                .expect("a request"),
        )
        .await
        .expect("an answer");
    assert_eq!(page.status(), StatusCode::OK);
    let html = body_text(page).await;
    assert!(html.contains(&id.to_string()), "{html}");
    assert!(
        !html.contains("<form"),
        "a read-only page has no forms: {html}"
    );
    let token = "0123456789abcdef0123456789abcdef";
    let refused = app
        .oneshot(post(
            "/dead/requeue",
            Some(&format!("outbox_csrf={token}")),
            &format!("csrf={token}&id={id}"),
        ))
        .await
        .expect("an answer");
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let record = store.get(id).await.expect("get").expect("the event");
    assert_eq!(record.status, EventStatus::Dead, "nothing changed");
}

#[tokio::test]
async fn a_post_needs_the_cookie_token() {
    let dir = tempfile::tempdir().expect("a directory");
    let (store, id) = store_with_a_dead_letter(&dir).await;
    let app = Dashboard::new(Arc::new(store.clone())).router();

    // The page sets the token cookie and puts the same token in its forms.
    let page = app
        .clone()
        .oneshot(
            Request::get("/dead")
                .body(Body::empty())
                .expect("a request"),
        )
        .await
        .expect("an answer");
    let cookie = page
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("a CSRF cookie")
        .to_owned();
    assert!(
        cookie.contains("SameSite=Strict") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().expect("name=value").to_owned();
    let token = pair.trim_start_matches("outbox_csrf=").to_owned();
    assert!(
        body_text(page)
            .await
            .contains(&format!("value=\"{token}\""))
    );

    for (cookie, form_token) in [
        (None, token.as_str()),
        (Some(pair.as_str()), "ffffffffffffffffffffffffffffffff"),
        (Some(pair.as_str()), ""),
    ] {
        let refused = app
            .clone()
            .oneshot(post(
                "/dead/requeue",
                cookie,
                &format!("csrf={form_token}&id={id}"),
            ))
            .await
            .expect("an answer");
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    }
    assert_eq!(
        store.get(id).await.expect("get").map(|r| r.status),
        Some(EventStatus::Dead)
    );

    let accepted = app
        .oneshot(post(
            "/dead/requeue",
            Some(&pair),
            &format!("csrf={token}&id={id}"),
        ))
        .await
        .expect("an answer");
    assert_eq!(accepted.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        accepted
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok()),
        Some("/dead")
    );
    assert_eq!(
        store.get(id).await.expect("get").map(|r| r.status),
        Some(EventStatus::Pending),
        "the dead letter is back in the queue"
    );
}
