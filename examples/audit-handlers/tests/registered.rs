//! H1: a handler defined with `#[handler]` in this library crate is found by `Registry::global()`
//! in a binary that links the crate, with no manual list.

use audit_handlers as _;

#[test]
fn handler_in_a_library_crate_is_registered() {
    let registry = outbox_core::handlers::Registry::global().expect("no duplicate handlers");
    let names: Vec<_> = registry
        .handlers_for("UserInvited")
        .iter()
        .map(|h| h.name())
        .collect();
    assert_eq!(names, ["audit_log"]);
}
