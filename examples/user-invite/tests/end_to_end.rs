//! The service as a user runs it: the real binary on PostgreSQL and NATS JetStream, 200 invites
//! (some duplicates, some malformed), SIGKILL in the middle of processing, a restart, then the
//! final state: one email row and one stream message per accepted invite, nothing for rejected
//! requests, nothing pending or leased, and a graceful exit on SIGTERM.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::Command;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use uuid::Uuid;

mod support;

use support::{Service, database_url, free_port, nats_url};

/// The 200 requests: (email it concerns, body, expected status).
fn requests() -> Vec<(Option<String>, String, u16)> {
    let malformed = [
        "not json".to_owned(),
        json!({ "emial": "typo@example.com" }).to_string(),
        json!({ "email": 42 }).to_string(),
        json!({ "email": "no-at-sign" }).to_string(),
        String::new(),
    ];
    (0..200)
        .map(|i| {
            if i % 20 == 7 {
                (None, malformed[(i / 20) % malformed.len()].clone(), 400)
            } else if i % 10 == 3 && i >= 10 {
                // The same address as the request just before it (which may be in flight).
                let email = format!("user{}@example.com", i - 1);
                (
                    Some(email.clone()),
                    json!({ "email": email }).to_string(),
                    409,
                )
            } else {
                let email = format!("user{i}@example.com");
                (
                    Some(email.clone()),
                    json!({ "email": email }).to_string(),
                    201,
                )
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invites_survive_sigkill_mid_processing_and_are_delivered_exactly_once() {
    let suffix = Uuid::now_v7().simple().to_string()[20..].to_owned();
    let schema = format!("invite_e2e_{suffix}");
    let stream = format!("INVITE_E2E_{suffix}");
    let pool = PgPool::connect(&database_url()).await.unwrap_or_else(|e| {
        panic!("PostgreSQL is needed at DATABASE_URL ({e}); start it with ./scripts/services.sh")
    });
    let nats = async_nats::connect(nats_url()).await.unwrap_or_else(|e| {
        panic!(
            "NATS with JetStream is needed at NATS_URL ({e}); start it with ./scripts/services.sh"
        )
    });
    let jetstream = async_nats::jetstream::new(nats);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let env = vec![
        ("DATABASE_URL", database_url()),
        ("NATS_URL", nats_url()),
        ("INVITE_SCHEMA", schema.clone()),
        ("INVITE_STREAM", stream.clone()),
        ("OUTBOX_LEASE_SECS", "2".to_owned()),
        ("OUTBOX_MAX_IN_FLIGHT", "4".to_owned()),
    ];

    // First run: slow mail server, so processing is still going when the process is killed.
    let mut slow = env.clone();
    slow.push(("EMAIL_DELAY_MS", "150".to_owned()));
    let mut first = Service::start("first", &slow, free_port());
    first.wait_ready(&http).await;

    let requests = requests();
    let responses: Vec<(Option<String>, u16, Value)> = futures::stream::iter(requests.clone())
        .map(|(email, body, _)| {
            let http = http.clone();
            let url = format!("{}/invite", first.base);
            async move {
                let response = http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-correlation-id", format!("corr-{}", Uuid::now_v7()))
                    .body(body)
                    .send()
                    .await
                    .expect("POST /invite");
                let status = response.status().as_u16();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                (email, status, body)
            }
        })
        .buffered(8)
        .collect()
        .await;
    // Per address: exactly one 201, every other request for it a 409; malformed bodies a 400.
    let mut accepted: BTreeMap<String, (Uuid, String)> = BTreeMap::new();
    let mut conflicts: BTreeMap<String, usize> = BTreeMap::new();
    for ((_, _, expected), (email, status, body)) in requests.iter().zip(&responses) {
        match (*expected, *status) {
            (400, 400) | (201 | 409, 201) => {}
            (201 | 409, 409) => {
                *conflicts
                    .entry(email.clone().unwrap_or_default())
                    .or_default() += 1
            }
            _ => panic!("{email:?}: expected {expected}, got {status}: {body}"),
        }
        if *status == 201 {
            let event_id = body["event_id"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .expect("event_id");
            let correlation = body["correlation_id"]
                .as_str()
                .expect("correlation_id")
                .to_owned();
            let email = email.clone().expect("accepted requests carry an email");
            assert!(accepted.insert(email, (event_id, correlation)).is_none());
        }
    }
    let total = accepted.len();
    assert_eq!(total, 171, "unique valid invites");
    assert_eq!(
        conflicts.values().sum::<usize>(),
        19,
        "duplicates answered 409"
    );
    assert!(conflicts.keys().all(|e| accepted.contains_key(e)));

    // Kill in the middle: some events done, others not, and some leased right now (the worker
    // claims in batches of its in-flight bound, so right after a batch completes it briefly holds
    // no lease; a kill then would leave nothing to redeliver).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = first.stats(&http).await;
        let processed = stats["processed"].as_u64().unwrap_or(0);
        let leased = stats["leased"].as_u64().unwrap_or(0);
        if processed >= 5 && leased > 0 {
            assert!(
                (processed as usize) < total,
                "everything was processed before the kill; slow the handlers down"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was processed:\n{}",
            first.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.child.kill().expect("SIGKILL");
    let status = first.child.wait().expect("reap");
    assert!(!status.success(), "the first run must die by SIGKILL");
    let before_restart: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.outbox WHERE status <> 'processed'"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(before_restart > 0, "the kill left nothing to finish");
    // Leases the dead process still held: those events must be redelivered (attempts > 1). The
    // stats above showed leases, but a batch can finish in the milliseconds before the kill lands.
    let held_at_kill: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.outbox WHERE status = 'pending' AND lease_token IS NOT NULL"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();

    // The consumer side starts over: with its durable consumer deleted, the second run reads the
    // stream from its first message again, and the inbox must absorb every message the first run
    // applied (and any whose acknowledgement the kill lost).
    let applied_by_first: i64 =
        sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.directory"))
            .fetch_one(&pool)
            .await
            .unwrap();
    let _ = jetstream
        .get_stream(&stream)
        .await
        .expect("the stream exists")
        .delete_consumer("invite-directory")
        .await;

    // Second run: picks up where the first died (expired leases included).
    let mut second = Service::start("second", &env, free_port());
    second.wait_ready(&http).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let stats = second.stats(&http).await;
        if stats["processed"].as_u64() == Some(total as u64) {
            assert_eq!(stats["pending"], 0, "{stats}");
            assert_eq!(stats["leased"], 0, "{stats}");
            assert_eq!(stats["dead"], 0, "{stats}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not drained after the restart: {stats}\n{}",
            second.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead: Value = http
        .get(format!("{}/outbox/dead", second.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(dead["dead"], json!([]));

    // The consumer side: exactly one directory row per accepted invite although the stream was
    // read twice (the inbox holds one id per message).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = jetstream
            .get_stream(&stream)
            .await
            .expect("the stream exists")
            .get_consumer("invite-directory")
            .await
            .expect("the service's consumer");
        let info = consumer.info().await.expect("consumer info");
        if info.num_pending == 0
            && info.num_ack_pending == 0
            && info.delivered.stream_sequence as usize >= total
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the consumer did not finish the stream: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let directory: Vec<(Uuid, String)> =
        sqlx::query_as(&format!("SELECT event_id, email FROM {schema}.directory"))
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        directory.len(),
        total,
        "one directory row per invite ({applied_by_first} applied before the kill, then the stream replayed)"
    );
    let in_directory: BTreeMap<String, Uuid> = directory
        .into_iter()
        .map(|(id, email)| (email, id))
        .collect();
    for (email, (event_id, _)) in &accepted {
        assert_eq!(in_directory.get(email), Some(event_id), "{email}");
    }
    let received: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.outbox_inbox WHERE consumer = 'invite-directory'"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(received as usize, total, "one inbox entry per message");

    // Graceful stop on SIGTERM.
    let terminated = Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
        .status()
        .expect("send SIGTERM");
    assert!(terminated.success());
    let status = second.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.success(),
        "SIGTERM must exit 0, got {status}:\n{}",
        second.log_tail()
    );

    // Exactly one email row per accepted invite, for the right event, and nothing else.
    let rows: Vec<(Uuid, String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT event_id, email, correlation_id FROM {schema}.sent_emails"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), total, "one email per accepted invite");
    let by_email: HashMap<&str, (&Uuid, &Option<String>)> = rows
        .iter()
        .map(|(id, e, c)| (e.as_str(), (id, c)))
        .collect();
    for (email, (event_id, correlation)) in &accepted {
        let (id, corr) = by_email.get(email.as_str()).expect("an email row");
        assert_eq!(*id, event_id, "{email}");
        assert_eq!(corr.as_deref(), Some(correlation.as_str()), "{email}");
    }
    let users: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.users"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(users as usize, total, "rejected requests wrote no user");
    let events: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {schema}.outbox"))
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(events as usize, total, "rejected requests enqueued nothing");
    let unfinished: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.outbox WHERE status <> 'processed' OR lease_token IS NOT NULL"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(unfinished, 0, "no event left pending or leased");
    let redelivered: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM {schema}.outbox WHERE attempts > 1"
    ))
    .fetch_one(&pool)
    .await
    .unwrap();
    let attempts: Vec<(i32, i64)> = sqlx::query_as(&format!(
        "SELECT attempts, count(*) FROM {schema}.outbox GROUP BY attempts ORDER BY attempts"
    ))
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        redelivered >= held_at_kill && (held_at_kill == 0 || redelivered > 0),
        "{held_at_kill} events leased by the killed process, {redelivered} redelivered: (attempts, events) {attempts:?}"
    );

    // Exactly one stream message per accepted invite, keyed by its event id.
    let mut js_stream = jetstream
        .get_stream(&stream)
        .await
        .expect("the stream exists");
    let info = js_stream.info().await.expect("stream info").clone();
    assert_eq!(
        info.state.messages as usize, total,
        "one message per accepted invite"
    );
    let mut ids = BTreeSet::new();
    for sequence in info.state.first_sequence..=info.state.last_sequence {
        let message = js_stream
            .get_raw_message(sequence)
            .await
            .expect("a stored message");
        let id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.to_string())
            .unwrap_or_else(|| panic!("no message id header: {:?}", message.headers));
        assert!(ids.insert(id.clone()), "message {id} stored twice");
    }
    let expected: BTreeSet<String> = accepted.values().map(|(id, _)| id.to_string()).collect();
    assert_eq!(ids, expected);

    jetstream
        .delete_stream(&stream)
        .await
        .expect("delete the stream");
    sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&pool)
        .await
        .unwrap();
}
