use outbox_core::{EventRecord, HandlerError, handler};

// No return type.
#[handler(event = "A")]
async fn returns_nothing(_record: EventRecord) {}

// Not a Result.
#[handler(event = "A")]
async fn returns_a_number(_record: EventRecord) -> u32 {
    7
}

// A Result whose success value cannot be stored.
#[handler(event = "A")]
async fn returns_a_string(_record: EventRecord) -> Result<String, HandlerError> {
    Ok(String::new())
}

fn main() {}
