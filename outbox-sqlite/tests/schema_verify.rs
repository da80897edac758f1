//! `verify()` checks the schema `migrate()` creates and names what is missing.

use outbox_core::StoreError;
use outbox_core::prelude::*;
use outbox_sqlite::SqliteStore;

fn message(err: &StoreError) -> String {
    match err {
        StoreError::Schema { message } => message.clone(),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_migrated_file_verifies_and_a_damaged_one_names_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("v.db")).await.unwrap();
    store.verify().await.expect("a fresh migration verifies");

    sqlx::raw_sql(
        "DROP INDEX outbox_events_due; DROP TRIGGER outbox_events_unpark;
         UPDATE outbox_events_schema SET version = 1",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let text = message(&store.verify().await.unwrap_err());
    for missing in [
        "index outbox_events_due",
        "trigger outbox_events_unpark",
        &format!("schema version {} (found 1)", outbox_sqlite::SCHEMA_VERSION),
    ] {
        assert!(text.contains(missing), "{missing} not named in: {text}");
    }
    assert!(!text.contains("column"), "{text}");

    // migrate() repairs it.
    sqlx::raw_sql("DELETE FROM outbox_events_schema")
        .execute(store.pool())
        .await
        .unwrap();
    store.migrate().await.unwrap();
    store.verify().await.expect("verifies after migrate()");
}

#[tokio::test]
async fn a_file_never_migrated_names_the_missing_table() {
    let dir = tempfile::tempdir().unwrap();
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("empty.db"))
        .create_if_missing(true);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let store = SqliteStore::new(pool);
    let text = message(&store.verify().await.unwrap_err());
    assert!(text.contains("outbox_events does not exist"), "{text}");
}
