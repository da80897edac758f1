#![doc = include_str!("../README.md")]

mod claim_window;
mod config;
mod error;
mod inspect;
mod migrations;
mod queries;
mod row;
mod schema;
mod store;
mod transaction;
mod wakeup;

pub use config::{PgStoreBuilder, Retention};
pub use schema::{SCHEMA_VERSION, schema_sql};
pub use store::PgStore;
pub use transaction::PgTx;

/// The sqlx this crate is built on, so an application names the same version: `enqueue_in`
/// takes an `&mut outbox_postgres::sqlx::PgConnection` (a transaction derefs to one).
pub use sqlx;
