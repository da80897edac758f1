//! What an operator of the service sees: Prometheus metrics at `/metrics` (counters, handler
//! histograms, per-type gauges sampled from the store), the outbox dashboard at `/admin/outbox`
//! behind the service's own basic authentication, and traces: the handlers' spans carry the trace
//! id of the request that enqueued the event (spans exported to standard output); and
//! `POST /invite?wait=…` answering with the handlers' outputs.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Service, database_url, free_port, nats_url};
use uuid::Uuid;

/// The value of the sample `name` (with its labels, as rendered) in a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// The trace the test's "caller" sends in its `traceparent` header.
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// The trace id of every exported span named `name`, from the stdout exporter's lines
/// (`Name : …` followed by `TraceId : …`).
fn trace_ids_of(log: &str, name: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut lines = log.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let is_it = line
            .strip_prefix("Name")
            .and_then(|rest| rest.trim_start().strip_prefix(':'))
            .is_some_and(|n| n.trim() == name);
        if is_it {
            if let Some(id) = lines
                .next()
                .and_then(|l| l.strip_prefix("TraceId"))
                .and_then(|rest| rest.trim_start().strip_prefix(':'))
            {
                ids.push(id.trim().to_owned());
            }
        }
    }
    ids
}

async fn scrape(http: &reqwest::Client, service: &Service) -> String {
    http.get(format!("{}/metrics", service.base))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("a metrics page")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_scraped_and_the_dashboard_asks_for_credentials() {
    let suffix = Uuid::now_v7().simple().to_string()[20..].to_owned();
    let env = vec![
        ("DATABASE_URL", database_url()),
        ("NATS_URL", nats_url()),
        ("INVITE_SCHEMA", format!("invite_ops_{suffix}")),
        ("INVITE_STREAM", format!("INVITE_OPS_{suffix}")),
        // Slow mail: the event stays leased long enough for a gauge sample to see it.
        ("EMAIL_DELAY_MS", "1500".to_owned()),
        ("METRICS_SAMPLE_MS", "100".to_owned()),
        ("ADMIN_PASSWORD", "s3cret".to_owned()),
        ("OTEL_TRACES_EXPORTER", "stdout".to_owned()),
    ];
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("an HTTP client");
    let mut service = Service::start("ops", &env, free_port());
    service.wait_ready(&http).await;

    let created = http
        .post(format!("{}/invite", service.base))
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&json!({ "email": "ops@example.com" }))
        .send()
        .await
        .expect("POST /invite");
    assert_eq!(created.status(), 201);

    // While the email handler runs, the sampled gauge shows the leased event by type.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = scrape(&http, &service).await;
        if sample(&page, "outbox_leased{event_type=\"UserInvited\"}") == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no leased gauge for UserInvited while it ran:\n{page}\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let deadline = Instant::now() + Duration::from_secs(30);
    let page = loop {
        let page = scrape(&http, &service).await;
        if sample(&page, "outbox_events_processed_total") == Some(1.0)
            && sample(&page, "outbox_pending{event_type=\"UserInvited\"}") == Some(0.0)
        {
            break page;
        }
        assert!(
            Instant::now() < deadline,
            "the invite was not counted as processed:\n{page}\n{}",
            service.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for handler in ["send_email", "publish"] {
        assert_eq!(
            sample(
                &page,
                &format!(
                    "outbox_handler_runs_total{{handler=\"{handler}\",outcome=\"succeeded\"}}"
                )
            ),
            Some(1.0),
            "{page}"
        );
        let count = sample(
            &page,
            &format!("outbox_handler_duration_seconds_count{{handler=\"{handler}\"}}"),
        );
        assert_eq!(count, Some(1.0), "{page}");
    }
    let email_seconds = sample(
        &page,
        "outbox_handler_duration_seconds_sum{handler=\"send_email\"}",
    )
    .unwrap_or(0.0);
    assert!(
        email_seconds >= 1.4,
        "the slow email took {email_seconds} s"
    );
    assert!(
        page.contains("# HELP outbox_events_claimed_total"),
        "{page}"
    );
    assert!(sample(&page, "outbox_lag_seconds").is_some(), "{page}");

    // Traces: the request, the worker's event span and both handlers' spans are one trace, the
    // caller's.
    let log = service.log_text();
    for span in ["invite", "outbox.event", "outbox.handler"] {
        let ids = trace_ids_of(&log, span);
        assert!(
            !ids.is_empty() && ids.iter().all(|id| id == TRACE_ID),
            "span {span}: trace ids {ids:?}, expected {TRACE_ID}:\n{}",
            service.log_tail()
        );
    }
    assert_eq!(
        trace_ids_of(&log, "outbox.handler").len(),
        2,
        "one span per handler"
    );

    // The dashboard: refused without credentials (with the browser's challenge), shown with them.
    let url = format!("{}/admin/outbox", service.base);
    let refused = http.get(&url).send().await.expect("GET the dashboard");
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().contains_key("www-authenticate"));
    let wrong = http
        .get(&url)
        .basic_auth("admin", Some("guess"))
        .send()
        .await
        .expect("GET the dashboard");
    assert_eq!(wrong.status(), 401);
    let shown = http
        .get(&url)
        .basic_auth("admin", Some("s3cret"))
        .send()
        .await
        .expect("GET the dashboard");
    assert_eq!(shown.status(), 200);
    let html = shown.text().await.expect("the overview");
    assert!(
        html.contains("id=\"total-processed\">1<"),
        "the overview must count the processed invite:\n{html}"
    );

    // ?wait=: the answer waits for the handlers and carries their outputs; too short a wait
    // answers 202 with the event still pending; a bad value is a 400.
    let waited = http
        .post(format!("{}/invite?wait=20s", service.base))
        .json(&json!({ "email": "waits@example.com" }))
        .send()
        .await
        .expect("POST /invite?wait=20s");
    assert_eq!(waited.status(), 201);
    let body: serde_json::Value = waited.json().await.expect("JSON");
    assert_eq!(body["outcome"], "processed", "{body}");
    assert!(
        body["outputs"]["publish"]["sequence"].as_u64().is_some(),
        "the relay's output (its stream sequence) comes back: {body}"
    );
    // The email handler's log line is stored with the event (contract L1).
    let event_page: serde_json::Value = http
        .get(format!(
            "{url}/events/{}",
            body["event_id"].as_str().unwrap_or_default()
        ))
        .basic_auth("admin", Some("s3cret"))
        .send()
        .await
        .expect("GET the event page")
        .text()
        .await
        .map(serde_json::Value::String)
        .expect("the event page");
    assert!(
        event_page
            .as_str()
            .unwrap_or_default()
            .contains("invitation email sent to waits@example.com"),
        "the event page shows the handler's log: {event_page}"
    );
    let pending = http
        .post(format!("{}/invite?wait=10ms", service.base))
        .json(&json!({ "email": "hurries@example.com" }))
        .send()
        .await
        .expect("POST /invite?wait=10ms");
    assert_eq!(
        pending.status(),
        202,
        "the slow email cannot finish in 10 ms"
    );
    let body: serde_json::Value = pending.json().await.expect("JSON");
    assert_eq!(body["outcome"], "pending", "{body}");
    let bad = http
        .post(format!("{}/invite?wait=soon", service.base))
        .json(&json!({ "email": "bad-wait@example.com" }))
        .send()
        .await
        .expect("POST /invite?wait=soon");
    assert_eq!(bad.status(), 400);
}
