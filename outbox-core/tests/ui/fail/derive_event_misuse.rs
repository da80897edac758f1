use outbox_core::Event;

#[derive(serde::Serialize, serde::Deserialize, Event)]
struct Generic<T> {
    value: T,
}

#[derive(serde::Serialize, serde::Deserialize, Event)]
#[outbox(kind = "x")]
struct UnknownOption {}

fn main() {}
