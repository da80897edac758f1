#![doc = include_str!("../README.md")]

mod config;
mod error;
mod inspect;
mod parking;
mod row;
mod schema;
mod store;
mod transaction;

pub use config::MongoStoreBuilder;
pub use store::MongoStore;
pub use transaction::MongoTx;

/// The MongoDB driver this store is built on, so an application names the same version (for the
/// sessions `EnqueueIn` joins).
pub use mongodb;
