//! The X1 clause catches stores that get transactional handlers wrong, on SQLite: each flawed
//! store below must fail it (and the clause passes on the real store, in `conformance.rs`).
//! A success recorded in a transaction of its own is not tried on SQLite: that
//! transaction would wait for the handler's, which holds the write lock.

mod support;

use outbox_testkit::broken::{TransactionFlaw, assert_caught};

#[test]
fn a_success_recorded_after_the_commit_is_caught() {
    assert_caught(
        support::SqliteFactory::new(),
        TransactionFlaw::SuccessAfterCommit,
    );
}

#[test]
fn an_unfenced_success_is_caught() {
    assert_caught(support::SqliteFactory::new(), TransactionFlaw::Unfenced);
}
