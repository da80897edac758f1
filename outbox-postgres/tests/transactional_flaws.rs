//! The X1 clause catches stores that get transactional handlers wrong, on PostgreSQL: each flawed
//! store below must fail it (and the clause passes on the real store, in `conformance.rs`).

mod support;

use outbox_testkit::broken::{TransactionFlaw, assert_caught};

#[test]
fn a_success_recorded_outside_the_transaction_is_caught() {
    assert_caught(
        support::PgFactory,
        TransactionFlaw::SuccessOutsideTransaction,
    );
}

#[test]
fn a_success_recorded_after_the_commit_is_caught() {
    assert_caught(support::PgFactory, TransactionFlaw::SuccessAfterCommit);
}

#[test]
fn an_unfenced_success_is_caught() {
    assert_caught(support::PgFactory, TransactionFlaw::Unfenced);
}
