#![doc = include_str!("../README.md")]

mod config;
mod error;
mod row;
mod store;

pub use config::MongoStoreBuilder;
pub use store::MongoStore;
