#![doc = include_str!("../README.md")]

mod config;
mod error;
mod queries;
mod row;
mod schema;
mod store;
mod wakeup;

pub use config::PgStoreBuilder;
pub use schema::schema_sql;
pub use store::PgStore;
