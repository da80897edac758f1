#![doc = include_str!("../README.md")]

mod config;
mod error;
mod queries;
mod row;
mod schema;
mod store;
mod wakeup;

pub use config::{PgStoreBuilder, Retention};
pub use schema::{SCHEMA_VERSION, schema_sql};
pub use store::PgStore;
