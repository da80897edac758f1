//! `?` on any error inside a handler: retryable by default, permanent for payloads that do not
//! decode, with the error's sources in the message.

use outbox_core::{HandlerError, Retry};

#[derive(Debug, thiserror::Error)]
#[error("could not send the welcome mail")]
struct SendFailed(#[source] std::io::Error);

fn send() -> Result<(), SendFailed> {
    Err(SendFailed(std::io::Error::new(
        std::io::ErrorKind::ConnectionRefused,
        "connection refused",
    )))
}

fn handler_body() -> Result<(), HandlerError> {
    send()?;
    Ok(())
}

#[test]
fn any_error_converts_as_retryable_with_its_sources() {
    let err = handler_body().unwrap_err();
    assert_eq!(err.retry_hint(), Retry::WithBackoff);
    assert_eq!(
        err.message(),
        "could not send the welcome mail: connection refused"
    );
}

#[test]
fn a_payload_that_does_not_decode_is_permanent() {
    fn decode() -> Result<u32, HandlerError> {
        Ok(serde_json::from_str::<u32>("\"not a number\"")?)
    }
    let err = decode().unwrap_err();
    assert!(err.is_permanent());
    assert!(
        err.message()
            .starts_with("payload does not match the event type"),
        "{}",
        err.message()
    );
}

#[test]
fn a_source_repeated_in_the_message_is_printed_once() {
    #[derive(Debug, thiserror::Error)]
    #[error("query failed: disk full")]
    struct Outer(#[source] Inner);
    #[derive(Debug, thiserror::Error)]
    #[error("disk full")]
    struct Inner;
    let err = HandlerError::from(Outer(Inner));
    assert_eq!(err.message(), "query failed: disk full");
}

#[test]
fn permanent_from_keeps_the_chain() {
    let err = HandlerError::permanent_from(SendFailed(std::io::Error::other("gone")));
    assert!(err.is_permanent());
    assert_eq!(err.message(), "could not send the welcome mail: gone");
}
