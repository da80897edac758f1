//! C11 in the dashboard: a row damaged by hand among good ones (a real SQLite store). The dead
//! letters page lists the good dead letter and says one does not decode; the bad event's page
//! explains what is wrong instead of failing; once a claim set a damaged pending event aside, the
//! "Set aside" page lists it with its reason.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use outbox_core::model::HandlerResults;
use outbox_core::prelude::*;
use outbox_core::store::{ClaimRequest, Completion};
use outbox_core::{EventStatus, NewEvent, StoreExt};
use outbox_dashboard::Dashboard;
use outbox_sqlite::SqliteStore;
use tower::ServiceExt;
use uuid::Uuid;

async fn get(app: &axum::Router, path: &str) -> (StatusCode, String) {
    let response = app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("a request"))
        .await
        .expect("an answer");
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn damage(store: &SqliteStore, id: Uuid) {
    outbox_sqlite::sqlx::query("UPDATE outbox_events SET handler_results = '[1,2]' WHERE id = ?1")
        .bind(id.to_string())
        .execute(store.pool())
        .await
        .expect("damage the row");
}

#[tokio::test]
async fn a_bad_row_among_good_ones() {
    let dir = tempfile::tempdir().expect("a directory");
    let store = SqliteStore::open(dir.path().join("bad.db"))
        .await
        .expect("a store");
    store.migrate().await.expect("migrate");
    for n in 0..2 {
        store
            .enqueue(NewEvent::new("dash.Dead", serde_json::json!({ "n": n })))
            .await
            .expect("enqueue");
    }
    let claimed = store
        .claim(&ClaimRequest::new("test", 2, Duration::from_secs(30)))
        .await
        .expect("claim");
    let dead = Completion {
        status: EventStatus::Dead,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: None,
    };
    for c in &claimed {
        store
            .complete(&c.lease, dead.clone())
            .await
            .expect("complete");
    }
    let (good, bad) = (claimed[0].record.id, claimed[1].record.id);
    damage(&store, bad).await;
    let app = Dashboard::new(Arc::new(store.clone())).router();

    let (status, html) = get(&app, "/dead").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(html.contains(&good.to_string()), "{html}");
    assert!(!html.contains(&bad.to_string()), "{html}");
    assert!(
        html.contains("id=\"dead-undecodable\">1 dead letter(s) do not decode"),
        "{html}"
    );

    let (status, html) = get(&app, &format!("/events/{bad}")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("does not decode") && html.contains("handler_results"),
        "{html}"
    );
    let (status, _) = get(&app, &format!("/events/{good}")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, html) = get(&app, "/").await;
    assert_eq!(status, StatusCode::OK, "{html}");

    let pending = store
        .enqueue(NewEvent::new("dash.Bad", serde_json::json!({})))
        .await
        .expect("enqueue")
        .id;
    damage(&store, pending).await;
    let claimed = store
        .claim(&ClaimRequest::new("test", 10, Duration::from_secs(30)))
        .await
        .expect("a claim does not fail on a bad row");
    assert!(claimed.is_empty());
    let (status, html) = get(&app, "/corrupt").await;
    assert_eq!(status, StatusCode::OK, "{html}");
    assert!(
        html.contains(&pending.to_string()) && html.contains("handler_results"),
        "{html}"
    );
    assert!(html.contains("1 event(s) set aside"), "{html}");
}
