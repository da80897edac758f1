//! `verify()` checks the schema with read-only rights and names what is missing; `migrate()` is a
//! no-op for a role without DDL rights when the schema is current.

mod support;

use std::time::Duration;

use outbox_core::prelude::*;
use outbox_core::store::ClaimRequest;
use outbox_core::{NewEvent, StoreError, StoreExt};
use outbox_postgres::PgStore;
use serde_json::json;

async fn migrated(prefix: &str) -> (PgStore, sqlx::PgPool, String) {
    let schema = outbox_testkit::namespace(prefix);
    let pool = support::connect_named(&schema).await.expect("PostgreSQL");
    let store = PgStore::builder(pool.clone())
        .schema(&schema)
        .build()
        .expect("store");
    store.migrate().await.expect("migrate");
    (store, pool, schema)
}

fn message(err: &StoreError) -> String {
    match err {
        StoreError::Schema { message } => message.clone(),
        other => panic!("expected a schema error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_migrated_schema_verifies_and_a_damaged_one_names_what_is_missing() {
    let (store, pool, schema) = migrated("verify").await;
    store.verify().await.expect("a fresh migration verifies");

    sqlx::raw_sql(&format!(
        "DROP INDEX \"{schema}\".outbox_events_due;
         DROP FUNCTION \"{schema}\".outbox_events_claim(bigint, text, bigint, timestamptz);
         ALTER TABLE \"{schema}\".outbox_events DROP COLUMN corrupt_reason"
    ))
    .execute(&pool)
    .await
    .unwrap();
    let err = store.verify().await.unwrap_err();
    let text = message(&err);
    for missing in [
        "column corrupt_reason",
        "index outbox_events_due",
        "function outbox_events_claim",
    ] {
        assert!(text.contains(missing), "{missing} not named in: {text}");
    }
    assert!(!text.contains("trigger"), "{text}");
}

#[tokio::test]
async fn a_missing_table_is_named() {
    let schema = outbox_testkit::namespace("verify_none");
    let pool = support::connect_named(&schema).await.expect("PostgreSQL");
    let store = PgStore::builder(pool).schema(&schema).build().unwrap();
    let text = message(&store.verify().await.unwrap_err());
    assert!(text.contains("does not exist"), "{text}");
    assert!(text.contains(&schema), "{text}");
}

#[tokio::test]
async fn a_role_with_data_permissions_only_migrates_as_a_no_op_verifies_and_works() {
    let (store, owner, schema) = migrated("verify_role").await;
    let role = format!("{schema}_app");
    sqlx::raw_sql(&format!(
        "CREATE ROLE \"{role}\" LOGIN;
         GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\";
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"{schema}\" TO \"{role}\";
         GRANT USAGE ON ALL SEQUENCES IN SCHEMA \"{schema}\" TO \"{role}\";"
    ))
    .execute(&owner)
    .await
    .unwrap();

    let url: sqlx::postgres::PgConnectOptions = support::database_url().parse().unwrap();
    let app_pool = sqlx::PgPool::connect_with(url.username(&role))
        .await
        .unwrap();
    let app = PgStore::builder(app_pool.clone())
        .schema(&schema)
        .build()
        .unwrap();
    // No DDL right: creating anything fails, so migrate() must not try.
    let ddl = sqlx::query(&format!("CREATE TABLE \"{schema}\".nope (x int)"))
        .execute(&app_pool)
        .await;
    assert!(ddl.is_err(), "the role must not be able to create tables");
    app.migrate()
        .await
        .expect("migrate is a no-op when current");
    app.verify().await.expect("verify needs no DDL right");
    app.enqueue(NewEvent::new("RoleCheck", json!({})))
        .await
        .unwrap();
    assert_eq!(app.stats().await.unwrap().pending, 1);
    let claimed = app
        .claim(&ClaimRequest::new("app", 10, Duration::from_secs(30)))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the role claims through the functions");

    app_pool.close().await;
    drop(store);
    sqlx::raw_sql(&format!("DROP OWNED BY \"{role}\"; DROP ROLE \"{role}\";"))
        .execute(&owner)
        .await
        .unwrap();
}
