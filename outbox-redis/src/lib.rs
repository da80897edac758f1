#![doc = include_str!("../README.md")]

mod config;
mod connection;
mod error;
mod inspect;
mod partition;
mod partition_calls;
mod row;
mod scheduler;
mod scripts;
mod store;
mod type_stats;

pub use config::RedisStoreBuilder;
pub use connection::RedisConnection;
pub use partition::MAX_PARTITIONS;
pub use store::RedisStore;

/// The redis crate this store is built on, so an application names the same version (for the
/// pipelines `enqueue_in_pipeline` adds to).
pub use redis;
