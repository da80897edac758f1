//! The X1 clause catches stores that get transactional handlers wrong, on MongoDB: each flawed
//! store below must fail it (and the clause passes on the real store, in `conformance.rs`).
//! A success recorded in a transaction of its own is not tried on MongoDB: that
//! transaction conflicts with the handler's, which holds the event.

mod support;

use outbox_testkit::broken::{TransactionFlaw, assert_caught};

#[test]
fn a_success_recorded_after_the_commit_is_caught() {
    assert_caught(
        support::MongoFactory::default(),
        TransactionFlaw::SuccessAfterCommit,
    );
}

#[test]
fn an_unfenced_success_is_caught() {
    assert_caught(support::MongoFactory::default(), TransactionFlaw::Unfenced);
}
