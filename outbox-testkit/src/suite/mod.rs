//! One public async function per contract clause. Each takes a [`StoreFactory`](crate::StoreFactory),
//! creates its own namespace, and returns a [`ClauseResult`](crate::ClauseResult).
//!
//! Call them all with [`conformance_suite!`](crate::conformance_suite), or one by one from your own
//! tests.

mod poison_and_limits;
mod processor_clauses;
mod store_clauses;
mod stress;
mod support;
mod transactional;

pub use poison_and_limits::{c11_input_limits, c11_poison_rows, c11_unstorable_outcomes};
pub use processor_clauses::{
    b1_batch_handlers, h5_hand_built_registry, l1_per_event_logs, p1_fan_out_per_handler_results,
    p2_retries_then_dead, p3_permanent_errors, p4_missing_handler_no_hot_loop,
    p4_unhandled_event_types, p5_panics_and_timeouts, p6_compromised_lease_never_overlaps,
    p6_lease_renewal_and_loss, p7_crash_mid_handler_redelivers, p7_graceful_shutdown,
    p9_store_faults, w1_wait_for_outcomes, w2_outcome_targets,
};
pub use store_clauses::{
    c1_transactional_enqueue, c2_claim_oldest_first, c2_claim_returns_every_field,
    c2_concurrent_claims_are_exclusive, c2_due_order, c2_scheduled_and_backoff,
    c3_batched_completion, c3_fenced_completion, c4_batched_renewal, c4_lease_renewal,
    c5_hand_off_to_the_next_event, c5_ordering_key, c6_idempotent_enqueue,
    c7_dead_letters_and_purge, c8_wakeups, c9_stats_and_lag, c9_stats_by_type_and_key_head,
    c10_schema_and_names,
};
pub use stress::{
    bad_input_payloads_and_names, c5_ordering_under_concurrency, p8_many_workers_stress,
};
pub use transactional::{EffectTable, TransactionalFactory, x1_inbox, x1_transactional_handlers};

/// Every clause function's name, in the order the suite runs them.
pub const CLAUSES: &[&str] = &[
    "c1_transactional_enqueue",
    "c2_claim_oldest_first",
    "c2_claim_returns_every_field",
    "c2_concurrent_claims_are_exclusive",
    "c2_due_order",
    "c2_scheduled_and_backoff",
    "c3_fenced_completion",
    "c3_batched_completion",
    "c4_lease_renewal",
    "c4_batched_renewal",
    "c5_ordering_key",
    "c5_hand_off_to_the_next_event",
    "c5_ordering_under_concurrency",
    "c6_idempotent_enqueue",
    "c7_dead_letters_and_purge",
    "c8_wakeups",
    "c9_stats_and_lag",
    "c9_stats_by_type_and_key_head",
    "c10_schema_and_names",
    "c11_poison_rows",
    "c11_input_limits",
    "c11_unstorable_outcomes",
    "p1_fan_out_per_handler_results",
    "p2_retries_then_dead",
    "p3_permanent_errors",
    "p4_unhandled_event_types",
    "p4_missing_handler_no_hot_loop",
    "p5_panics_and_timeouts",
    "p6_lease_renewal_and_loss",
    "p6_compromised_lease_never_overlaps",
    "p7_graceful_shutdown",
    "p7_crash_mid_handler_redelivers",
    "p8_many_workers_stress",
    "p9_store_faults",
    "h5_hand_built_registry",
    "bad_input_payloads_and_names",
    "w1_wait_for_outcomes",
    "l1_per_event_logs",
    "b1_batch_handlers",
    "w2_outcome_targets",
];
