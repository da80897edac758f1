#![doc = include_str!("../README.md")]

pub mod broken;
#[doc = include_str!("../CONTRACT.md")]
pub mod contract {}
mod faulty;
mod harness;
mod macros;
mod memory;
mod memory_factory;
mod poll;
pub mod suite;

pub use faulty::{Faults, FaultyStore};
pub use harness::{
    ClauseResult, Damage, Failure, StoreFactory, TestTransaction, Verdict, begin_enqueue_in,
    namespace, run_clause, run_clause_applying,
};
pub use memory::{MemoryStore, MemoryTransaction};
pub use memory_factory::MemoryFactory;
pub use poll::{wait_drained, wait_until};
