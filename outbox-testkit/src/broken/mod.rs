//! Stores with one deliberate flaw each, for proving that the conformance suite catches them:
//!
//! - [`Breaking`] wraps any store and breaks one rule of the store contract at one entry point
//!   ([`Break`]: a batch form, a read path, ties, a counter, a repair operation, idempotency keys,
//!   lease tokens). [`assert_suite_catches`] runs the clauses of the broken rule on a
//!   [`BreakingFactory`] and fails unless one of them fails.
//! - [`BrokenTransactions`] gets transactional handlers (contract X1) wrong.
//!
//! A backend runs both over its own factory in its `tests/`, so the suite is shown to catch these
//! mistakes on that database, not only on the memory store.

mod catching;
mod rules;
mod transactions;

pub use catching::{
    BreakingFactory, assert_suite_catches, assert_suite_catches_every_break, suite_catches,
};
pub use rules::{Break, Breaking};
pub use transactions::{
    BrokenTransactions, BrokenTransactionsFactory, TransactionFlaw, assert_caught,
};
