//! The conformance suite catches rule-level mistakes on MongoDB: a store that breaks one rule of
//! the contract at one entry point (each `outbox_testkit::broken::Break`) must fail the clauses
//! of that rule, here on the real server.

mod support;

#[test]
fn the_suite_catches_every_broken_rule() {
    outbox_testkit::broken::assert_suite_catches_every_break(support::MongoFactory::default);
}
