//! One public async function per contract clause. Each takes a [`StoreFactory`],
//! creates its own namespace, and returns a [`ClauseResult`].
//!
//! Call them all with [`conformance_suite!`](crate::conformance_suite), or one by one from your own
//! tests.
//!
//! Many clause functions are longer than a hundred lines, by design: each is one scenario whose
//! steps build on the state the previous steps left (a claim, then a stale completion, then a
//! read-back), and whose failure messages name the step. What several clauses share — records,
//! claims, expected read-backs, waiting — is in the `support` and `expect` modules.

use crate::harness::{ClauseResult, StoreFactory};

mod enqueue_and_claim;
mod expect;
mod handler_features;
mod keys;
mod leases;
mod operations;
mod poison_and_limits;
mod processor_clauses;
mod processor_precisely;
mod quarantine;
mod reads_back;
mod stress;
mod support;
mod transactional;
mod transitions;
mod worker_faults;

pub use enqueue_and_claim::{
    c1_transactional_enqueue, c2_claim_oldest_first, c2_claim_returns_every_field,
    c2_concurrent_claims_are_exclusive, c2_due_order, c2_scheduled_and_backoff,
};
pub use handler_features::{
    b1_batch_handlers, h5_hand_built_registry, l1_per_event_logs, w1_wait_for_outcomes,
    w2_outcome_targets,
};
pub use keys::{c5_hand_off_to_the_next_event, c5_ordering_key, c6_idempotent_enqueue};
pub use leases::{
    c3_batched_completion, c3_fenced_completion, c4_batched_renewal, c4_lease_renewal,
};
pub use operations::{
    c7_dead_letters_and_purge, c8_wakeups, c9_stats_and_lag, c9_stats_by_type_and_key_head,
    c10_schema_and_names,
};
pub use poison_and_limits::{c11_input_limits, c11_poison_rows, c11_unstorable_outcomes};
pub use processor_clauses::{
    p1_fan_out_per_handler_results, p2_retries_then_dead, p3_permanent_errors,
    p4_missing_handler_no_hot_loop, p4_unhandled_event_types, p5_panics_and_timeouts,
};
pub use processor_precisely::{
    c8_worker_wakes_on_commit, p2_backoff_schedule, p4_settled_handlers_are_not_awaited,
};
pub use quarantine::c11_every_field_is_quarantined;
pub use reads_back::{
    c4_renewal_reads_back, c6_idempotency_keys_are_exact_and_kept, c7_repair_reads_back,
    c9_counts_every_state,
};
pub use stress::{
    bad_input_payloads_and_names, c5_ordering_under_concurrency, p8_many_workers_stress,
};
pub use transactional::{EffectTable, TransactionalFactory, x1_inbox, x1_transactional_handlers};
pub use transitions::{
    c2_enqueue_batch_reads_back, c3_every_transition_reads_back, c3_lease_tokens_are_fresh,
};
pub use worker_faults::{
    p6_compromised_lease_never_overlaps, p6_lease_renewal_and_loss,
    p7_crash_mid_handler_redelivers, p7_graceful_shutdown, p9_store_faults,
};

macro_rules! clause_list {
    ($($clause:ident),* $(,)?) => {
        /// Every clause function's name, in the order the suite runs them.
        pub const CLAUSES: &[&str] = &[$(::core::stringify!($clause)),*];

        /// Runs the clause called `name` (one of [`CLAUSES`]) on `factory`; `None` when no clause
        /// has that name. For running the suite from a program — a broken-store check, a custom
        /// harness — rather than through [`conformance_suite!`](crate::conformance_suite).
        ///
        /// ```
        /// # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
        /// use outbox_testkit::{MemoryFactory, Verdict, suite};
        /// let result = suite::run_named("c4_lease_renewal", &MemoryFactory::default()).await;
        /// assert_eq!(result, Some(Ok(Verdict::Passed)));
        /// # });
        /// ```
        pub async fn run_named<F: StoreFactory>(name: &str, factory: &F) -> Option<ClauseResult> {
            match name {
                $(::core::stringify!($clause) => Some($clause(factory).await),)*
                _ => None,
            }
        }
    };
}

macro_rules! declare_clauses {
    (; $($clause:ident),* $(,)?) => {
        clause_list!($($clause),*);
    };
}

crate::__with_clauses!(declare_clauses;);
