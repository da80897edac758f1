//! Handlers receive application state given to the worker (`State<T>` parameters); a worker built
//! without a state a handler needs fails at `build()`, naming the type.

use std::sync::Mutex;
use std::time::Duration;

use outbox_core::prelude::*;
use outbox_core::{
    BuildError, EventRecord, HandlerContext, HandlerError, NewEvent, State, Worker, WorkerConfig,
    handler,
};
use outbox_testkit::MemoryStore;
use serde_json::json;

/// Stands in for an application's connection pool or client.
struct Directory {
    greeted: Mutex<Vec<String>>,
}

struct Greeting {
    text: String,
}

#[handler(event = "UserJoined")]
async fn greet(
    event: EventRecord,
    directory: State<Directory>,
    ctx: HandlerContext,
    greeting: State<Greeting>,
) -> Result<(), HandlerError> {
    let name = event.payload["name"].as_str().unwrap_or("?");
    directory
        .greeted
        .lock()
        .map_err(|_| HandlerError::retry("directory lock poisoned"))?
        .push(format!(
            "{} {name} (attempt {})",
            greeting.text, ctx.attempt
        ));
    Ok(())
}

async fn store() -> ((), MemoryStore) {
    ((), MemoryStore::new())
}

#[tokio::test]
async fn a_worker_without_a_needed_state_does_not_build() {
    let (_dir, store) = store().await;
    let built = Worker::builder(store.clone())
        .state(Greeting {
            text: "hello".into(),
        })
        .build();
    let Err(err) = built else {
        panic!("built a worker without the Directory a handler needs");
    };
    match &err {
        BuildError::MissingState {
            handler, type_name, ..
        } => {
            assert_eq!(handler, "greet");
            assert!(type_name.ends_with("Directory"), "{type_name}");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(err.to_string().contains("WorkerBuilder::state"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_receive_the_state_given_to_the_worker() {
    let (_dir, store) = store().await;
    store
        .enqueue_batch(vec![
            NewEvent::new("UserJoined", json!({ "name": "ada" })),
            NewEvent::new("UserJoined", json!({ "name": "grace" })),
        ])
        .await
        .unwrap();
    let directory = std::sync::Arc::new(Directory {
        greeted: Mutex::new(Vec::new()),
    });
    let worker = Worker::builder(store.clone())
        // A value the application keeps a handle to, and a plain value.
        .state_arc(std::sync::Arc::clone(&directory))
        .state(Greeting {
            text: "welcome".into(),
        })
        .config(WorkerConfig::default().with_poll_interval(Duration::from_millis(20)))
        .build()
        .unwrap()
        .start();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while store.stats().await.unwrap().processed < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "events not processed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    worker.shutdown().await;
    let mut greeted = directory.greeted.lock().unwrap().clone();
    greeted.sort();
    assert_eq!(
        greeted,
        vec!["welcome ada (attempt 1)", "welcome grace (attempt 1)"]
    );
}
