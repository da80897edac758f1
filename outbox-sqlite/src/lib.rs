#![doc = include_str!("../README.md")]

mod config;
mod error;
mod inspect;
mod queries;
mod row;
mod schema;
mod store;
mod transaction;

pub use config::SqliteStoreBuilder;
pub use schema::{SCHEMA_VERSION, schema_sql};
pub use store::SqliteStore;
pub use transaction::SqliteTx;

/// The sqlx this crate is built on, so an application names the same version: `enqueue_in` takes
/// an `&mut outbox_sqlite::sqlx::SqliteConnection` (a transaction derefs to one).
pub use sqlx;
