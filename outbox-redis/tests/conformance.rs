//! The whole conformance suite against a real Redis server, one key prefix per clause.

mod support;

outbox_testkit::conformance_suite!(
    support::RedisFactory::default(),
    applies: [
        c1_transactional_enqueue,
        c8_wakeups,
        c8_worker_wakes_on_commit,
        c11_poison_rows,
        c11_every_field_is_quarantined,
    ]
);
