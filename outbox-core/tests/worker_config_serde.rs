//! `WorkerConfig` from configuration: defaults for what is left out, human durations, clear errors.

use std::time::Duration;

use outbox_core::{NoHandlerPolicy, WorkerConfig};

#[test]
fn an_empty_document_is_the_default_configuration() {
    let config: WorkerConfig = serde_json::from_str("{}").unwrap();
    let default = WorkerConfig::default();
    assert_eq!(config.batch_size, default.batch_size);
    assert_eq!(config.lease, default.lease);
    assert_eq!(config.no_handler, default.no_handler);
    assert_eq!(config.retry.max_attempts, default.retry.max_attempts);
    assert!(!config.worker_id.is_empty());
    config.validate().unwrap();
}

#[test]
fn every_policy_shape_reads() {
    let config: WorkerConfig = serde_json::from_str(
        r#"{ "renew_interval": "5s", "no_handler": { "backoff": { "initial": "1s", "max": "2m" } },
             "shutdown_grace": "1m 30s" }"#,
    )
    .unwrap();
    assert_eq!(config.renew_interval, Some(Duration::from_secs(5)));
    assert_eq!(config.shutdown_grace, Duration::from_secs(90));
    assert_eq!(
        config.no_handler,
        NoHandlerPolicy::Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(120)
        }
    );
    let config: WorkerConfig =
        serde_json::from_str(r#"{ "no_handler": "mark_processed" }"#).unwrap();
    assert_eq!(config.no_handler, NoHandlerPolicy::MarkProcessed);
}

#[test]
fn it_round_trips_through_serialization() {
    let config = WorkerConfig::default().with_batch_size(77);
    let text = serde_json::to_string(&config).unwrap();
    assert!(text.contains(r#""lease":"30s""#), "{text}");
    let back: WorkerConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back.batch_size, 77);
    assert_eq!(back.worker_id, config.worker_id);
}

#[test]
fn bad_input_is_a_clear_error() {
    let unknown = serde_json::from_str::<WorkerConfig>(r#"{ "batchsize": 10 }"#).unwrap_err();
    assert!(
        unknown.to_string().contains("unknown field `batchsize`"),
        "{unknown}"
    );
    let duration =
        serde_json::from_str::<WorkerConfig>(r#"{ "lease": "30 parsecs" }"#).unwrap_err();
    assert!(
        duration
            .to_string()
            .contains(r#"string "30 parsecs", expected a duration"#),
        "{duration}"
    );
    let number = serde_json::from_str::<WorkerConfig>(r#"{ "lease": 30 }"#).unwrap_err();
    assert!(number.to_string().contains("invalid type"), "{number}");
    // Values that parse but make no sense are refused by validate(), as for the builder methods.
    let zero: WorkerConfig = serde_json::from_str(r#"{ "batch_size": 0 }"#).unwrap();
    let invalid = zero.validate().unwrap_err();
    assert_eq!(invalid.field, "batch_size");
}
