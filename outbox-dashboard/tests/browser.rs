//! The dashboard in a real browser: headless Chromium driven through ChromeDriver (WebDriver).
//! A dead letter is shown on the overview and the dead-letter page; clicking its Requeue button
//! puts it back, and the worker processes it. Needs `chromium` and `chromedriver` (Debian's
//! `chromium` and `chromium-driver`; `./scripts/test.sh` installs them when missing).

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use outbox_core::handlers::Registry;
use outbox_core::prelude::*;
use outbox_core::{
    EventStatus, Handler, HandlerError, NewEvent, Store, StoreExt, Worker, WorkerConfig,
};
use outbox_dashboard::Dashboard;
use outbox_sqlite::SqliteStore;
use outbox_testkit::wait_until;
use serde_json::json;
use uuid::Uuid;

const BASE: &str = "/admin/outbox";

async fn status(store: &SqliteStore, id: Uuid) -> Option<EventStatus> {
    store.get(id).await.ok().flatten().map(|r| r.status)
}

/// Starts ChromeDriver on a free port; it is killed when the child is dropped.
async fn chromedriver() -> (tokio::process::Child, u16) {
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        probe.local_addr().expect("an address").port()
    };
    let binary = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
    let child = tokio::process::Command::new(&binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {binary} ({e}): install Debian's chromium and chromium-driver (./scripts/test.sh does)")
        });
    wait_until(Duration::from_secs(20), "chromedriver listens", || async {
        Ok(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok())
    })
    .await
    .expect("chromedriver");
    (child, port)
}

async fn browser(port: u16) -> Client {
    let chrome = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chrome,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1200,900"],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .expect("a WebDriver session in headless Chromium")
}

async fn text(client: &Client, css: &str) -> String {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no element {css}: {e}"))
        .text()
        .await
        .expect("element text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_a_dead_letter_in_a_real_browser() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SqliteStore::open(dir.path().join("outbox.db"))
        .await
        .expect("a SQLite store");
    store.migrate().await.expect("migrate");

    // The handler refuses until `fixed` is set: the event goes dead at once (permanent error).
    let fixed = Arc::new(AtomicBool::new(false));
    let handler = {
        let fixed = Arc::clone(&fixed);
        Handler::raw("dash.Charge", "charge_card", move |_record, ctx| {
            let fixed = fixed.load(Ordering::SeqCst);
            async move {
                if fixed {
                    ctx.info("charged");
                    Ok(())
                } else {
                    ctx.warn("the bank refused the card");
                    Err(HandlerError::permanent("card declined: code 51"))
                }
            }
        })
    };
    let registry = Registry::builder()
        .handler(handler)
        .build()
        .expect("a registry");
    let worker = Worker::builder(store.clone())
        .registry(registry)
        .config(WorkerConfig::default().with_poll_interval(Duration::from_millis(50)))
        .build()
        .expect("a worker")
        .start();
    let id = store
        .enqueue(NewEvent::new("dash.Charge", json!({ "order": 42 })))
        .await
        .expect("enqueue")
        .id;
    wait_until(Duration::from_secs(20), "the event is dead", || async {
        Ok(status(&store, id).await == Some(EventStatus::Dead))
    })
    .await
    .expect("dead letter");

    let shared: Arc<dyn Store> = Arc::new(store.clone());
    let app = axum::Router::new().nest(
        BASE,
        Dashboard::new(shared)
            .base_path(BASE)
            .sample_every(Duration::from_millis(200))
            .router(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let addr = listener.local_addr().expect("an address");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let url = |path: &str| format!("http://{addr}{BASE}{path}");

    let (_driver, port) = chromedriver().await;
    let client = browser(port).await;

    // Overview: the counts as the page shows them.
    client.goto(&url("")).await.expect("open the overview");
    assert_eq!(text(&client, "#total-dead").await, "1");
    assert_eq!(text(&client, "#total-pending").await, "0");
    let by_type = text(&client, "#by-type").await;
    assert!(by_type.contains("dash.Charge"), "{by_type}");
    // DASHBOARD_SCREENSHOT=path saves this page as PNG (the README's picture).
    if let Ok(path) = std::env::var("DASHBOARD_SCREENSHOT") {
        let png = client.screenshot().await.expect("a screenshot");
        std::fs::write(&path, png).expect("write the screenshot");
    }

    // A POST without the page's CSRF token is refused, and changes nothing.
    let forged =
        reqwest_free_post(addr, &format!("{BASE}/dead/requeue"), &format!("id={id}")).await;
    assert!(forged.starts_with("HTTP/1.1 403"), "{forged}");
    assert_eq!(status(&store, id).await, Some(EventStatus::Dead));

    // Dead letters: the row names the handler and error; fix the handler, click Requeue.
    client.goto(&url("/dead")).await.expect("open dead letters");
    let table = text(&client, "#dead").await;
    assert!(
        table.contains("charge_card") && table.contains("card declined: code 51"),
        "{table}"
    );
    fixed.store(true, Ordering::SeqCst);
    client
        .find(Locator::Id(&format!("requeue-{id}")))
        .await
        .expect("a requeue button for the dead letter")
        .click()
        .await
        .expect("click requeue");
    wait_until(
        Duration::from_secs(20),
        "the re-queued event is processed",
        || async { Ok(status(&store, id).await == Some(EventStatus::Processed)) },
    )
    .await
    .expect("re-queued and processed");

    // The event page says so, and the overview counts it.
    client
        .goto(&url(&format!("/events/{id}")))
        .await
        .expect("open the event");
    assert_eq!(text(&client, "#status").await, "processed");
    // The handler's log, both deliveries: what it said when it failed, and when it succeeded.
    let logs = text(&client, "#logs").await;
    assert!(
        logs.contains("the bank refused the card") && logs.contains("charged"),
        "{logs}"
    );
    assert!(text(&client, "#why").await.starts_with("processed at"));
    client.goto(&url("")).await.expect("open the overview");
    assert_eq!(text(&client, "#total-dead").await, "0");
    assert_eq!(text(&client, "#total-processed").await, "1");

    client.close().await.expect("close the browser");
    server.abort();
    worker.shutdown().await;
}

/// A raw HTTP/1.1 POST with a form body and no cookie: what a forged cross-site request carries.
async fn reqwest_free_post(addr: std::net::SocketAddr, path: &str, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the dashboard");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("send the request");
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .expect("read the answer");
    answer
}
