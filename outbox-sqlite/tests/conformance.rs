//! The whole conformance suite on SQLite, one temporary database file per clause.

mod support;

outbox_testkit::conformance_suite!(support::SqliteFactory::new());
outbox_testkit::transactional_suite!(support::SqliteFactory::new());
