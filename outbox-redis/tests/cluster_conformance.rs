//! The whole conformance suite against a real Redis Cluster (three masters, started by
//! `./scripts/services.sh`), each outbox spread over 8 partitions.

mod support;

outbox_testkit::conformance_suite!(
    support::RedisFactory::cluster(8),
    applies: [
        c1_transactional_enqueue,
        c8_wakeups,
        c8_worker_wakes_on_commit,
        c11_poison_rows,
        c11_every_field_is_quarantined,
    ]
);
