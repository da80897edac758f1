//! The quickstart's application data and outbox, on SQLite or PostgreSQL: the same three steps
//! (begin, insert the user, enqueue the event) in each database's own transaction type.

use std::path::Path;
use std::sync::Arc;

use outbox_core::prelude::*;
use outbox_core::{NewEvent, Store};
use outbox_postgres::PgStore;
use outbox_sqlite::SqliteStore;

use crate::UserInvited;

type BoxError = Box<dyn std::error::Error>;

/// The quickstart's database.
pub(crate) enum App {
    /// An embedded SQLite file.
    Sqlite(SqliteStore),
    /// A PostgreSQL database (`DATABASE_URL`).
    Postgres(PgStore),
}

impl App {
    /// PostgreSQL when `DATABASE_URL` is set, otherwise a new SQLite file in `dir`.
    pub(crate) async fn connect(dir: &Path) -> Result<Self, BoxError> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            let pool = sqlx::PgPool::connect(&url).await?;
            sqlx::raw_sql(
                "DROP SCHEMA IF EXISTS outbox_quickstart CASCADE;
                 CREATE SCHEMA outbox_quickstart;
                 CREATE TABLE outbox_quickstart.users (email TEXT PRIMARY KEY)",
            )
            .execute(&pool)
            .await?;
            let store = PgStore::builder(pool).schema("outbox_quickstart").build()?;
            store.migrate().await?;
            return Ok(Self::Postgres(store));
        }
        let store = SqliteStore::open(dir.join("quickstart.db")).await?;
        sqlx::query("CREATE TABLE users (email TEXT PRIMARY KEY)")
            .execute(store.pool())
            .await?;
        Ok(Self::Sqlite(store))
    }

    /// Where the data lives.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => {
                "SQLite file in a temporary directory (set DATABASE_URL to use PostgreSQL)"
            }
            Self::Postgres(_) => "PostgreSQL (DATABASE_URL), schema outbox_quickstart",
        }
    }

    /// The store, for the worker.
    pub(crate) fn store(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(s) => Arc::new(s.clone()),
            Self::Postgres(s) => Arc::new(s.clone()),
        }
    }

    /// Inserts the user and enqueues `UserInvited` in one transaction; commits or rolls back.
    pub(crate) async fn invite(&self, email: &str, commit: bool) -> Result<(), BoxError> {
        let event = NewEvent::from_event(&UserInvited {
            email: email.into(),
        })?
        .correlation_id(format!("invite-{email}"));
        match self {
            Self::Sqlite(store) => {
                let mut tx = store.pool().begin().await?;
                sqlx::query("INSERT INTO users (email) VALUES (?1)")
                    .bind(email)
                    .execute(&mut *tx)
                    .await?;
                store.enqueue_in(&mut tx, event).await?;
                if commit {
                    tx.commit().await?
                } else {
                    tx.rollback().await?
                }
            }
            Self::Postgres(store) => {
                let mut tx = store.pool().begin().await?;
                sqlx::query("INSERT INTO outbox_quickstart.users (email) VALUES ($1)")
                    .bind(email)
                    .execute(&mut *tx)
                    .await?;
                store.enqueue_in(&mut tx, event).await?;
                if commit {
                    tx.commit().await?
                } else {
                    tx.rollback().await?
                }
            }
        }
        Ok(())
    }

    /// The users that exist.
    pub(crate) async fn users(&self) -> Result<Vec<String>, BoxError> {
        Ok(match self {
            Self::Sqlite(store) => {
                sqlx::query_scalar("SELECT email FROM users ORDER BY email")
                    .fetch_all(store.pool())
                    .await?
            }
            Self::Postgres(store) => {
                sqlx::query_scalar("SELECT email FROM outbox_quickstart.users ORDER BY email")
                    .fetch_all(store.pool())
                    .await?
            }
        })
    }
}
