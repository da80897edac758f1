//! The in-memory reference store passes the whole conformance suite.

// The reference store has every optional part, and its factory damages events: no clause may
// pass it as "does not apply".
outbox_testkit::conformance_suite!(
    outbox_testkit::MemoryFactory::default(),
    applies: [
        c1_transactional_enqueue,
        c8_wakeups,
        c8_worker_wakes_on_commit,
        c11_poison_rows,
        c11_every_field_is_quarantined,
    ]
);
