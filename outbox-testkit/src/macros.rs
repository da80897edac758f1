//! [`conformance_suite!`](crate::conformance_suite): one `#[test]` per clause from one line.

/// Calls the macro named by the path before `;` with the arguments after it, followed by `;` and
/// every conformance clause of the store contract, in the order the suite runs them: the one list
/// that [`conformance_suite!`](crate::conformance_suite), [`CLAUSES`](crate::suite::CLAUSES) and
/// [`run_named`](crate::suite::run_named) are built from.
#[doc(hidden)]
#[macro_export]
macro_rules! __with_clauses {
    ($($callback:ident)::+; $($args:tt)*) => {
        $($callback)::+!($($args)*;
            c1_transactional_enqueue,
            c2_claim_oldest_first,
            c2_claim_returns_every_field,
            c2_concurrent_claims_are_exclusive,
            c2_due_order,
            c2_scheduled_and_backoff,
            c2_enqueue_batch_reads_back,
            c3_fenced_completion,
            c3_batched_completion,
            c3_every_transition_reads_back,
            c3_lease_tokens_are_fresh,
            c4_lease_renewal,
            c4_batched_renewal,
            c4_renewal_reads_back,
            c5_ordering_key,
            c5_hand_off_to_the_next_event,
            c5_ordering_under_concurrency,
            c6_idempotent_enqueue,
            c6_idempotency_keys_are_exact_and_kept,
            c7_dead_letters_and_purge,
            c7_repair_reads_back,
            c8_wakeups,
            c8_worker_wakes_on_commit,
            c9_stats_and_lag,
            c9_counts_every_state,
            c9_stats_by_type_and_key_head,
            c10_schema_and_names,
            c11_poison_rows,
            c11_every_field_is_quarantined,
            c11_input_limits,
            c11_unstorable_outcomes,
            p1_fan_out_per_handler_results,
            p2_retries_then_dead,
            p2_backoff_schedule,
            p3_permanent_errors,
            p4_unhandled_event_types,
            p4_missing_handler_no_hot_loop,
            p4_settled_handlers_are_not_awaited,
            p5_panics_and_timeouts,
            p6_lease_renewal_and_loss,
            p6_compromised_lease_never_overlaps,
            p7_graceful_shutdown,
            p7_crash_mid_handler_redelivers,
            p8_many_workers_stress,
            p9_store_faults,
            h5_hand_built_registry,
            bad_input_payloads_and_names,
            w1_wait_for_outcomes,
            l1_per_event_logs,
            b1_batch_handlers,
            w2_outcome_targets,
        );
    };
}

/// Generates one `#[test]` per contract clause for a store factory.
///
/// Put it in your backend's `tests/conformance.rs`:
///
/// ```ignore
/// outbox_testkit::conformance_suite!(my_backend::testing::Factory::from_env());
/// ```
///
/// The expression is evaluated once per test, inside that test's runtime; each clause uses its own
/// namespace, so the tests run in parallel. A clause about an optional part of the contract that
/// the store does not have (no wake-ups: `subscribe` returns `None`; no enqueue in a caller's
/// transaction: the factory's `begin` returns `None`; a factory that cannot damage rows) passes
/// and prints why.
///
/// Name the optional clauses your store must pass after `applies:`, and their tests fail instead
/// of passing as "does not apply" — so a factory that forgets to wire `begin`, or a `subscribe`
/// that returns `None` by mistake, is caught:
///
/// ```ignore
/// outbox_testkit::conformance_suite!(
///     my_backend::testing::Factory::from_env(),
///     applies: [c1_transactional_enqueue, c8_wakeups, c8_worker_wakes_on_commit, c11_poison_rows]
/// );
/// ```
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr $(,)?) => {
        $crate::conformance_suite!($factory, applies: []);
    };
    ($factory:expr, applies: [$($applies:ident),* $(,)?] $(,)?) => {
        // Every name after `applies:` must be a clause of the suite.
        const _: fn() = || {
            $(let _ = $crate::suite::$applies::<$crate::MemoryFactory>;)*
        };
        $crate::__with_clauses!(
            $crate::__conformance_tests;
            $factory; [$(::core::stringify!($applies)),*]
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_tests {
    ($factory:expr; $applies:tt; $($clause:ident),* $(,)?) => {
        $(
            #[test]
            fn $clause() {
                $crate::run_clause_applying(
                    ::core::stringify!($clause),
                    ::std::time::Duration::from_secs(300),
                    &$applies,
                    async {
                        let factory = $factory;
                        $crate::suite::$clause(&factory).await
                    },
                );
            }
        )*
    };
}

/// Generates the `#[test]`s of contract X1 (transactional handlers and the inbox) for a
/// [`TransactionalFactory`](crate::suite::TransactionalFactory), beside
/// [`conformance_suite!`](crate::conformance_suite) in a backend with transactions:
///
/// ```ignore
/// outbox_testkit::transactional_suite!(my_backend::testing::Factory::from_env());
/// ```
#[macro_export]
macro_rules! transactional_suite {
    ($factory:expr) => {
        $crate::__conformance_tests!($factory; [];
            x1_transactional_handlers,
            x1_inbox,
        );
    };
}
