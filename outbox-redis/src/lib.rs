#![doc = include_str!("../README.md")]

mod config;
mod error;
mod row;
mod scripts;
mod store;

pub use config::RedisStoreBuilder;
pub use store::RedisStore;
