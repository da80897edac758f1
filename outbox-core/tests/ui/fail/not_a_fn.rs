#[outbox_core::handler(event = "A")]
struct Nope;

fn main() {}
