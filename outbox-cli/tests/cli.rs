//! The `outbox` binary against every real backend: counts, lag, a dead letter listed, shown and
//! re-queued, a purge, the schema commands, and clear errors.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use outbox_core::model::{HandlerResults, HandlerState};
use outbox_core::prelude::*;
use outbox_core::store::{ClaimRequest, Completion};
use outbox_core::{EventStatus, NewEvent, Store, StoreExt};
use serde_json::{Value, json};

/// Runs `outbox --url <url> <args…> --json`; the parsed output, or the error text on failure.
fn outbox(url: &str, extra: &[&str], args: &[&str]) -> Result<Value, String> {
    let (ok, text, err) = outbox_raw(url, extra, args);
    if !ok {
        return Err(err);
    }
    serde_json::from_str(text.trim()).map_err(|e| format!("not JSON ({e}): {text}"))
}

/// Three events: one processed, one dead (its handler gave up), one pending.
async fn fill(store: &Arc<dyn Store>) -> String {
    for n in 0..3 {
        store
            .enqueue(NewEvent::new("cli.Test", json!({ "n": n })))
            .await
            .expect("store or command");
    }
    let claimed = store
        .claim(&ClaimRequest::new("cli-test", 2, Duration::from_secs(60)))
        .await
        .expect("store or command");
    assert_eq!(claimed.len(), 2);
    let processed = Completion {
        status: EventStatus::Processed,
        handler_results: HandlerResults::new(),
        attempts: 1,
        retry_delay: None,
    };
    store
        .complete(&claimed[0].lease, processed)
        .await
        .expect("store or command");
    let mut results = HandlerResults::new();
    results.insert(
        "send_mail".to_owned(),
        HandlerState {
            attempts: 5,
            last_error: Some("SMTP 550: mailbox unavailable".to_owned()),
            gave_up: true,
            ..HandlerState::default()
        },
    );
    let dead = Completion {
        status: EventStatus::Dead,
        handler_results: results,
        attempts: 1,
        retry_delay: None,
    };
    store
        .complete(&claimed[1].lease, dead)
        .await
        .expect("store or command");
    claimed[1].record.id.to_string()
}

async fn exercise(url: &str, extra: &[&str], store: Arc<dyn Store>, sql: bool) {
    let dead_id = fill(&store).await;
    tokio::time::sleep(Duration::from_millis(30)).await;

    let stats = outbox(url, extra, &["stats"]).expect("store or command");
    assert_eq!(
        (
            stats["pending"].as_u64(),
            stats["processed"].as_u64(),
            stats["dead"].as_u64()
        ),
        (Some(1), Some(1), Some(1)),
        "{stats}"
    );
    let types = &stats["by_type"];
    assert_eq!(types.as_array().map(Vec::len), Some(1), "{stats}");
    assert_eq!(types[0]["event_type"], "cli.Test", "{stats}");
    assert_eq!(
        (types[0]["pending"].as_u64(), types[0]["dead"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );
    let why = outbox(url, extra, &["explain", &dead_id]).expect("store or command");
    let summary = why["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("handler send_mail gave up"), "{why}");
    let lag = outbox(url, extra, &["lag"]).expect("store or command");
    assert!(lag["lag_ms"].as_u64().unwrap_or(0) >= 20, "{lag}");

    let dead = outbox(url, extra, &["dead", "list"]).expect("store or command");
    let listed: Vec<&str> = dead
        .as_array()
        .expect("store or command")
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(listed, [dead_id.as_str()], "{dead}");

    let shown = outbox(url, extra, &["show", &dead_id]).expect("store or command");
    assert_eq!(shown["status"], "dead", "{shown}");
    assert_eq!(
        shown["handler_results"]["send_mail"]["last_error"],
        "SMTP 550: mailbox unavailable"
    );

    let groups = outbox(url, extra, &["dead", "list", "--group"]).expect("store or command");
    assert_eq!(groups[0]["count"], 1, "{groups}");
    assert_eq!(groups[0]["handler"], "send_mail", "{groups}");
    let fp = groups[0]["fingerprint"]
        .as_str()
        .expect("a fingerprint")
        .to_owned();
    let none = outbox(
        url,
        extra,
        &["dead", "requeue", "--fingerprint", "00000000"],
    )
    .expect("store or command");
    assert_eq!(none["requeued"], json!([]), "{none}");
    let requeued =
        outbox(url, extra, &["dead", "requeue", "--fingerprint", &fp]).expect("store or command");
    assert_eq!(requeued["requeued"], json!([dead_id]), "{requeued}");
    let all = outbox(url, extra, &["dead", "requeue", "--all"]).expect("store or command");
    assert_eq!(all["requeued"], json!([]), "{all}");
    let stats = outbox(url, extra, &["stats"]).expect("store or command");
    assert_eq!(
        (stats["pending"].as_u64(), stats["dead"].as_u64()),
        (Some(2), Some(0)),
        "{stats}"
    );

    let purged =
        outbox(url, extra, &["purge-processed", "--older-than", "0s"]).expect("store or command");
    assert_eq!(purged["deleted"], 1, "{purged}");
    let none = outbox(url, extra, &["corrupt", "list"]).expect("store or command");
    assert_eq!(none, json!([]));

    // Errors: a bad id, an id that is not a dead letter, a bad age.
    let err = outbox(url, extra, &["show", "nope"]).expect_err("the command must fail");
    assert!(err.contains("is not an event id"), "{err}");
    let err =
        outbox(url, extra, &["dead", "requeue", &dead_id]).expect_err("the command must fail");
    assert!(err.contains("not dead letters"), "{err}");
    let err = outbox(url, extra, &["dead", "purge", "--older-than", "soon"])
        .expect_err("the command must fail");
    assert!(err.contains("--older-than soon"), "{err}");

    // explain: waiting behind the head of an ordering key, and scheduled.
    let first = store
        .enqueue(NewEvent::new("cli.Keyed", json!({})).ordering_key("cli-key"))
        .await
        .expect("store or command");
    let second = store
        .enqueue(NewEvent::new("cli.Keyed", json!({})).ordering_key("cli-key"))
        .await
        .expect("store or command");
    let why = outbox(url, extra, &["explain", &second.id.to_string()]).expect("store or command");
    assert_eq!(why["key_head"], json!(first.id), "{why}");
    assert!(
        why["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with(&format!("waiting behind {}", first.id)),
        "{why}"
    );
    let later = store
        .enqueue(NewEvent::new("cli.Later", json!({})).deliver_after(Duration::from_secs(600)))
        .await
        .expect("store or command");
    let why = outbox(url, extra, &["explain", &later.id.to_string()]).expect("store or command");
    assert!(
        why["summary"]
            .as_str()
            .unwrap_or_default()
            .starts_with("scheduled until"),
        "{why}"
    );

    let verified = outbox(url, extra, &["verify"]).expect("store or command");
    assert_eq!(verified["verified"], true, "{verified}");
    if sql {
        let ddl = outbox(url, extra, &["migrate", "--print"]).expect("store or command");
        assert!(
            ddl["ddl"][0].as_str().unwrap_or("").contains("CREATE"),
            "{ddl}"
        );
    }
}

#[tokio::test]
async fn sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cli.db");
    let url = format!("sqlite:{}", path.display());
    let err = outbox(&url, &[], &["stats"]).unwrap_err();
    assert!(err.contains("cannot open the SQLite file"), "{err}");
    // `migrate` creates the file and its schema.
    let migrated = outbox(&url, &[], &["migrate"]).unwrap();
    assert_eq!(migrated["migrated"], true);
    let store = outbox_sqlite::SqliteStore::open(&path).await.unwrap();
    exercise(&url, &[], Arc::new(store), true).await;
}

#[tokio::test]
async fn postgres() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (./scripts/test.sh sets it)");
    let schema = outbox_testkit_namespace("cli");
    let pool = outbox_postgres::sqlx::PgPool::connect(&url).await.unwrap();
    let store = outbox_postgres::PgStore::builder(pool)
        .schema(&schema)
        .build()
        .unwrap();
    // The schema does not exist yet: `verify` says so, `migrate` creates it.
    let err = outbox(&url, &["--schema", &schema], &["verify"]).unwrap_err();
    assert!(err.contains("does not exist"), "{err}");
    let migrated = outbox(&url, &["--schema", &schema], &["migrate"]).unwrap();
    assert_eq!(migrated["migrated"], true);
    exercise(&url, &["--schema", &schema], Arc::new(store), true).await;
}

#[tokio::test]
async fn redis() {
    let url = std::env::var("REDIS_URL").expect("REDIS_URL (./scripts/test.sh sets it)");
    let name = outbox_testkit_namespace("cli");
    let client = outbox_redis::redis::Client::open(url.as_str()).unwrap();
    let store = outbox_redis::RedisStore::builder(client)
        .await
        .unwrap()
        .name(&name)
        .build()
        .unwrap();
    exercise(&url, &["--table", &name], Arc::new(store), false).await;
}

/// A partitioned outbox on the Redis Cluster: the tool finds its partition count by itself.
#[tokio::test]
async fn redis_cluster() {
    let nodes: Vec<String> = std::env::var("REDIS_CLUSTER_URLS")
        .expect("REDIS_CLUSTER_URLS (./scripts/test.sh sets it)")
        .split(',')
        .map(str::to_owned)
        .collect();
    let name = outbox_testkit_namespace("cli");
    let urls: Vec<&str> = nodes.iter().map(String::as_str).collect();
    let store = outbox_redis::RedisStore::cluster_builder(&urls)
        .await
        .unwrap()
        .name(&name)
        .partitions(8)
        .build()
        .unwrap();
    // Record the partition count before the tool first looks.
    store
        .claim(&ClaimRequest::new("cli-test", 1, Duration::from_secs(1)))
        .await
        .unwrap();
    let hosts: Vec<&str> = nodes
        .iter()
        .map(|n| n.trim_start_matches("redis://"))
        .collect();
    let url = format!("redis-cluster://{}", hosts.join(","));
    exercise(&url, &["--table", &name], Arc::new(store), false).await;
}

#[tokio::test]
async fn mongo() {
    let url = std::env::var("MONGODB_URI").expect("MONGODB_URI (./scripts/test.sh sets it)");
    let collection = outbox_testkit_namespace("cli");
    let client = outbox_mongo::mongodb::Client::with_uri_str(&url)
        .await
        .unwrap();
    let store = outbox_mongo::MongoStore::builder(client)
        .collection(&collection)
        .build()
        .unwrap();
    store.migrate().await.unwrap();
    exercise(&url, &["--table", &collection], Arc::new(store), false).await;
}

#[test]
fn an_unknown_url_is_a_clear_error() {
    let err = outbox("ftp://example.com", &[], &["stats"]).unwrap_err();
    assert!(err.contains("unsupported URL"), "{err}");
}

/// A name no other test run uses (letters, digits, `_`: valid on every backend).
fn outbox_testkit_namespace(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// Runs `outbox --url <url> <args…> --json`: exit success, stdout and stderr.
fn outbox_raw(url: &str, extra: &[&str], args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_outbox"))
        .arg("--url")
        .arg(url)
        .args(extra)
        .args(args)
        .arg("--json")
        .output()
        .expect("run the outbox binary");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// C11 in the tool: a row damaged by hand among good ones (PostgreSQL, where a hand-written
/// `UPDATE` is how it happens). Every command still answers for the good rows and names the bad
/// one as such: `dead list` lists the good dead letter and says on stderr that one was left out,
/// `show` and `explain` of the bad one fail with a message saying it does not decode, `stats`
/// counts, and once a claim set a damaged pending event aside `corrupt list` shows it with its
/// reason.
#[tokio::test]
async fn postgres_a_bad_row_among_good_ones() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL (./scripts/test.sh sets it)");
    let schema = outbox_testkit_namespace("clibad");
    let pool = outbox_postgres::sqlx::PgPool::connect(&url).await.unwrap();
    let store = outbox_postgres::PgStore::builder(pool.clone())
        .schema(&schema)
        .build()
        .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let extra = ["--schema", schema.as_str()];
    let good_dead = fill(&store).await;
    let bad_dead = fill(&store).await;
    let damage = |id: String| {
        let pool = pool.clone();
        let schema = schema.clone();
        async move {
            outbox_postgres::sqlx::query(&format!(
                "UPDATE \"{schema}\".outbox_events SET handler_results = '[1,2]' WHERE id = $1::uuid"
            ))
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    damage(bad_dead.clone()).await;

    let (ok, out, err) = outbox_raw(&url, &extra, &["dead", "list"]);
    assert!(ok, "{err}");
    let listed: Value = serde_json::from_str(out.trim()).unwrap();
    let ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, [good_dead.as_str()], "{listed}");
    assert!(
        err.contains(&bad_dead) && err.contains("does not decode"),
        "stderr must name the dead letter left out: {err}"
    );
    for command in ["show", "explain"] {
        let err = outbox(&url, &extra, &[command, &bad_dead]).expect_err("the command must fail");
        assert!(
            err.contains("handler_results") && err.contains(&bad_dead),
            "{command}: {err}"
        );
    }
    let shown = outbox(&url, &extra, &["show", &good_dead]).expect("store or command");
    assert_eq!(shown["status"], "dead", "{shown}");
    let stats = outbox(&url, &extra, &["stats"]).expect("store or command");
    assert_eq!(stats["dead"].as_u64(), Some(2), "{stats}");

    // A damaged pending event: the next claim sets it aside, the tool lists it.
    let pending = store
        .enqueue(NewEvent::new("cli.Bad", json!({})))
        .await
        .unwrap()
        .id;
    damage(pending.to_string()).await;
    let claimed = store
        .claim(&ClaimRequest::new("cli-test", 10, Duration::from_secs(60)))
        .await
        .unwrap();
    assert!(claimed.iter().all(|c| c.record.id != pending));
    let corrupt = outbox(&url, &extra, &["corrupt", "list"]).expect("store or command");
    assert_eq!(corrupt[0]["id"], json!(pending.to_string()), "{corrupt}");
    assert!(
        corrupt[0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("handler_results"),
        "{corrupt}"
    );
    let stats = outbox(&url, &extra, &["stats"]).expect("store or command");
    assert_eq!(stats["corrupt"].as_u64(), Some(1), "{stats}");
}
