#![doc = include_str!("../README.md")]

mod config;
mod error;
mod queries;
mod row;
mod schema;
mod store;

pub use config::SqliteStoreBuilder;
pub use schema::{SCHEMA_VERSION, schema_sql};
pub use store::SqliteStore;
