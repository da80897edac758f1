//! SQLite: one database file per outbox in a temporary directory, and the raw INSERT / lease /
//! complete statements on the library's table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use outbox_core::Store;
use outbox_core::prelude::*;
use outbox_sqlite::SqliteStore;
use sqlx::SqlitePool;
use uuid::Uuid;

use super::unique;
use crate::BenchError;
use crate::target::{Bench, EVENT_TYPE, Target, event, payload};

fn db(err: sqlx::Error) -> BenchError {
    BenchError::Database(err.to_string())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Database files in a temporary directory, removed at the end.
#[derive(Debug)]
pub(crate) struct Sqlite {
    dir: tempfile::TempDir,
}

impl Sqlite {
    pub(crate) fn new() -> Result<Self, BenchError> {
        Ok(Self {
            dir: tempfile::tempdir().map_err(|e| BenchError::Setup(e.to_string()))?,
        })
    }
}

#[async_trait]
impl Target for Sqlite {
    fn name(&self) -> &'static str {
        "sqlite"
    }

    async fn fresh(&self, tag: &str) -> Result<Box<dyn Bench>, BenchError> {
        let path = self.dir.path().join(format!("{tag}_{}.db", unique()));
        let store = SqliteStore::open(&path).await?;
        Ok(Box::new(SqliteBench {
            pool: store.pool().clone(),
            store: Arc::new(store),
            path,
        }))
    }
}

struct SqliteBench {
    pool: SqlitePool,
    store: Arc<SqliteStore>,
    path: std::path::PathBuf,
}

#[async_trait]
impl Bench for SqliteBench {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn outbox_enqueue(&self, transactions: usize, per: usize) -> Result<(), BenchError> {
        for t in 0..transactions {
            let mut tx = self.pool.begin().await.map_err(db)?;
            if per == 1 {
                self.store.enqueue_in(&mut tx, event(t)).await?;
            } else {
                let events = (0..per).map(|i| event(t * per + i)).collect();
                self.store.enqueue_batch_in(&mut tx, events).await?;
            }
            tx.commit().await.map_err(db)?;
        }
        Ok(())
    }

    async fn raw_enqueue(&self, transactions: usize, per: usize) -> Result<(), BenchError> {
        let insert =
            "INSERT INTO outbox_events (id, event_type, payload, created_at, available_at, due_at)
                      VALUES (?1, ?2, ?3, ?4, ?4, ?4)";
        for t in 0..transactions {
            let mut tx = self.pool.begin().await.map_err(db)?;
            for i in 0..per {
                sqlx::query(insert)
                    .bind(Uuid::now_v7().to_string())
                    .bind(EVENT_TYPE)
                    .bind(payload(t * per + i).to_string())
                    .bind(now_ms())
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
        }
        Ok(())
    }

    async fn raw_drain(&self, processors: usize, batch: usize) -> Result<u64, BenchError> {
        let claim = "UPDATE outbox_events SET attempts = attempts + 1,
                         lease_token = lower(hex(randomblob(16))), locked_by = ?3,
                         locked_until = ?1 + 30000, due_at = ?1 + 30000
                     WHERE seq IN (SELECT seq FROM outbox_events
                                   WHERE status = 'pending' AND due_at <= ?1
                                   ORDER BY due_at, seq LIMIT ?2)
                     RETURNING id, lease_token, payload";
        let complete = "UPDATE outbox_events SET status = 'processed', processed_at = ?1,
                            lease_token = NULL, locked_by = NULL, locked_until = NULL
                        WHERE id = ?2 AND lease_token = ?3 AND status = 'pending'";
        let done = Arc::new(AtomicU64::new(0));
        let loops = (0..processors).map(|p| {
            let (pool, done) = (self.pool.clone(), done.clone());
            tokio::spawn(async move {
                loop {
                    let leased: Vec<(String, String, String)> = sqlx::query_as(claim)
                        .bind(now_ms())
                        .bind(i64::try_from(batch).unwrap_or(100))
                        .bind(format!("raw-{p}"))
                        .fetch_all(&pool)
                        .await
                        .map_err(db)?;
                    if leased.is_empty() {
                        return Ok::<_, BenchError>(());
                    }
                    // The batch is completed in one write transaction (as the library's
                    // complete_many does).
                    let now = now_ms();
                    let mut tx = pool.begin().await.map_err(db)?;
                    for (id, token, _payload) in leased {
                        let r = sqlx::query(complete)
                            .bind(now)
                            .bind(id)
                            .bind(token)
                            .execute(&mut *tx)
                            .await
                            .map_err(db)?;
                        done.fetch_add(r.rows_affected(), Ordering::Relaxed);
                    }
                    tx.commit().await.map_err(db)?;
                }
            })
        });
        for handle in loops.collect::<Vec<_>>() {
            handle
                .await
                .map_err(|e| BenchError::Setup(e.to_string()))??;
        }
        Ok(done.load(Ordering::Relaxed))
    }

    async fn facts(&self) -> Vec<(String, String)> {
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        vec![(
            "file".to_owned(),
            format!("{:.1} MB", size as f64 / 1_048_576.0),
        )]
    }

    async fn size_bytes(&self) -> Option<u64> {
        let file = |suffix: &str| {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            std::fs::metadata(path).map_or(0, |m| m.len())
        };
        Some(file("") + file("-wal"))
    }

    async fn cleanup(&self) {
        self.pool.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.path.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}
