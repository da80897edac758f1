//! The in-memory reference store passes the whole conformance suite.

outbox_testkit::conformance_suite!(outbox_testkit::MemoryFactory::default());

/// The reference store declares every optional capability, and its factory damages events: no
/// clause may skip it as "does not apply".
#[test]
fn every_optional_clause_applies_to_the_memory_store() {
    for clause in [
        "c1_transactional_enqueue",
        "c8_wakeups",
        "c11_poison_rows",
        "c11_every_field_is_quarantined",
    ] {
        outbox_testkit::run_clause(clause, std::time::Duration::from_secs(60), async move {
            let factory = outbox_testkit::MemoryFactory::default();
            match outbox_testkit::suite::run_named(clause, &factory).await {
                Some(Ok(outbox_testkit::Verdict::NotApplicable(why))) => Err(
                    outbox_testkit::Failure::new(format!("skipped on the reference store: {why}")),
                ),
                Some(result) => result,
                None => Err(outbox_testkit::Failure::new("no such clause")),
            }
        });
    }
}
