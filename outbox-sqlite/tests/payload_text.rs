//! Payloads are handed over as the stored JSON text, checked at the claim but not parsed: a row
//! whose payload alone is not JSON is still set aside as corrupt, and a typed read of a good one
//! comes straight from the text.

use std::time::Duration;

use outbox_core::prelude::*;
use outbox_core::store::ClaimRequest;
use outbox_core::{NewEvent, StoreExt};
use outbox_sqlite::SqliteStore;
use serde_json::json;

#[tokio::test]
async fn a_payload_that_is_not_json_is_set_aside_and_the_others_are_read_as_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("payload.db"))
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        let event = NewEvent::new("Text", json!({ "n": n, "name": format!("event {n}") }));
        ids.push(store.enqueue(event).await.unwrap().id);
    }
    // Only the payload is broken: its other columns decode.
    let broken = sqlx::query("UPDATE outbox_events SET payload = '{\"n\": 1,' WHERE id = ?1")
        .bind(ids[1].to_string())
        .execute(store.pool())
        .await
        .unwrap();
    assert_eq!(broken.rows_affected(), 1);

    let claimed = store
        .claim(&ClaimRequest::new("w", 10, Duration::from_secs(30)))
        .await
        .unwrap();
    let claimed_ids: Vec<_> = claimed.iter().map(|c| c.record.id).collect();
    assert_eq!(claimed_ids, [ids[0], ids[2]]);

    #[derive(serde::Deserialize)]
    struct Text {
        n: u32,
        name: String,
    }
    let typed: Text = claimed[1].record.decode().unwrap();
    assert_eq!((typed.n, typed.name.as_str()), (2, "event 2"));
    assert_eq!(claimed[0].record.payload["name"], "event 0");
    assert_eq!(
        claimed[0].record.payload,
        json!({ "n": 0, "name": "event 0" })
    );

    let corrupt = store.corrupt_events(10).await.unwrap();
    assert_eq!(corrupt.len(), 1, "{corrupt:?}");
    assert_eq!(corrupt[0].id, ids[1].to_string());
    assert!(
        corrupt[0].reason.starts_with("payload:"),
        "the reason names the payload: {}",
        corrupt[0].reason
    );
}
