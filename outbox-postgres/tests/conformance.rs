//! The whole conformance suite against a real PostgreSQL server, one schema per clause.

mod support;

outbox_testkit::conformance_suite!(
    support::PgFactory,
    applies: [
        c1_transactional_enqueue,
        c8_wakeups,
        c8_worker_wakes_on_commit,
        c11_poison_rows,
        c11_every_field_is_quarantined,
    ]
);
outbox_testkit::transactional_suite!(support::PgFactory);
