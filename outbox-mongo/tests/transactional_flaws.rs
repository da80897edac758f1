//! The X1 clause catches stores that get transactional handlers wrong, on MongoDB: each flawed
//! store below must fail it (and the clause passes on the real store, in `conformance.rs`). A
//! success recorded in a transaction of its own is not tried here: on MongoDB that transaction
//! conflicts with the handler's, which holds the event.

mod support;

use outbox_testkit::broken::{BrokenTransactionsFactory, TransactionFlaw};
use outbox_testkit::suite;

fn caught(flaw: TransactionFlaw) {
    let factory = BrokenTransactionsFactory::new(support::MongoFactory::default(), flaw);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let verdict = runtime.block_on(suite::x1_transactional_handlers(&factory));
    match verdict {
        Err(failure) => println!("{flaw:?} caught: {failure}"),
        Ok(v) => panic!("the X1 clause passed a store with {flaw:?}: {v:?}"),
    }
}

#[test]
fn a_success_recorded_after_the_commit_is_caught() {
    caught(TransactionFlaw::SuccessAfterCommit);
}

#[test]
fn an_unfenced_success_is_caught() {
    caught(TransactionFlaw::Unfenced);
}
