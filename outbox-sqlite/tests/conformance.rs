//! The whole conformance suite on SQLite, one temporary database file per clause.

mod support;

outbox_testkit::conformance_suite!(
    support::SqliteFactory::new(),
    applies: [
        c1_transactional_enqueue,
        c11_poison_rows,
        c11_every_field_is_quarantined,
    ]
);
outbox_testkit::transactional_suite!(support::SqliteFactory::new());
