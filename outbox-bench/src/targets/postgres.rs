//! PostgreSQL: the library's table, and the raw INSERT / lease / complete statements on it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use outbox_core::Store;
use outbox_core::prelude::*;
use outbox_postgres::{PgStore, Retention};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use super::unique;
use crate::BenchError;
use crate::target::{Bench, EVENT_TYPE, Target, event, payload};

fn db(err: sqlx::Error) -> BenchError {
    BenchError::Database(err.to_string())
}

/// The PostgreSQL server at `DATABASE_URL`.
#[derive(Debug)]
pub(crate) struct Postgres {
    pool: PgPool,
}

impl Postgres {
    pub(crate) async fn connect() -> Result<Self, BenchError> {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/outbox_test".to_owned());
        // No ping per acquire (sqlx's default sends one round trip more per statement), as the
        // outbox-postgres README suggests for worker processes; the raw baseline shares the pool.
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .test_before_acquire(false)
            .connect(&url)
            .await
            .map_err(|e| {
                BenchError::Setup(format!(
                    "cannot reach PostgreSQL at DATABASE_URL ({e}); start it with ./scripts/services.sh"
                ))
            })?;
        Ok(Self { pool })
    }
}

#[async_trait]
impl Target for Postgres {
    fn name(&self) -> &'static str {
        "postgres"
    }

    async fn fresh(&self, tag: &str) -> Result<Box<dyn Bench>, BenchError> {
        self.fresh_with(tag, Retention::KeepProcessed).await
    }

    async fn fresh_deleting(&self, tag: &str) -> Result<Option<Box<dyn Bench>>, BenchError> {
        self.fresh_with(tag, Retention::DeleteProcessed)
            .await
            .map(Some)
    }
}

impl Postgres {
    async fn fresh_with(
        &self,
        tag: &str,
        retention: Retention,
    ) -> Result<Box<dyn Bench>, BenchError> {
        let schema = format!("bench_{tag}_{}", unique());
        let store = PgStore::builder(self.pool.clone())
            .schema(&schema)
            .table("outbox")
            .retention(retention)
            .build()?;
        store.migrate().await?;
        Ok(Box::new(PgBench {
            table: format!("\"{schema}\".\"outbox\""),
            schema,
            pool: self.pool.clone(),
            store: Arc::new(store),
        }))
    }
}

struct PgBench {
    schema: String,
    table: String,
    pool: PgPool,
    store: Arc<PgStore>,
}

#[async_trait]
impl Bench for PgBench {
    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    /// `VACUUM ANALYZE`, as `peers/graphile_drain.mjs` does to its jobs before its drain: both
    /// drains (and the raw loop, filled the same way) start from a settled table. Without it, ours
    /// paid for the fill's aftermath (hint bits set by the first claims; 12–15 % more server
    /// CPU per event) while graphile-worker did not.
    async fn settle(&self) -> Result<(), BenchError> {
        sqlx::query(&format!("VACUUM ANALYZE {}", self.table))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
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
        let single = format!(
            "INSERT INTO {} (id, event_type, payload) VALUES ($1, $2, $3)",
            self.table
        );
        let batch = format!(
            "INSERT INTO {} (id, event_type, payload)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[])",
            self.table
        );
        for t in 0..transactions {
            let mut tx = self.pool.begin().await.map_err(db)?;
            if per == 1 {
                sqlx::query(&single)
                    .bind(Uuid::now_v7())
                    .bind(EVENT_TYPE)
                    .bind(payload(t))
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            } else {
                let ids: Vec<Uuid> = (0..per).map(|_| Uuid::now_v7()).collect();
                let types = vec![EVENT_TYPE; per];
                let payloads: Vec<serde_json::Value> =
                    (0..per).map(|i| payload(t * per + i)).collect();
                sqlx::query(&batch)
                    .bind(ids)
                    .bind(types)
                    .bind(payloads)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
            }
            tx.commit().await.map_err(db)?;
        }
        Ok(())
    }

    async fn raw_drain(&self, processors: usize, batch: usize) -> Result<u64, BenchError> {
        // The minimal lease-then-complete protocol on the same table, indexes and durability
        // setting as the library: no ordering-key check, no handler results.
        let claim = Arc::new(format!(
            "UPDATE {t} e SET attempts = e.attempts + 1, lease_token = gen_random_uuid(),
                 locked_by = $2, locked_until = now() + interval '30 seconds',
                 due_at = now() + interval '30 seconds'
             FROM (SELECT id FROM {t}
                   WHERE status = 'pending' AND due_at <= now()
                   ORDER BY due_at, seq LIMIT $1 FOR UPDATE SKIP LOCKED) c
             WHERE e.id = c.id AND set_config('synchronous_commit', 'off', true) IS NOT NULL
             RETURNING e.id, e.lease_token, e.payload",
            t = self.table
        ));
        // The batch is completed in one statement, each row fenced by its token (the library's
        // worker batches the completions of events that finish together the same way).
        let complete = Arc::new(format!(
            "UPDATE {} e SET status = 'processed', processed_at = now(),
                 lease_token = NULL, locked_by = NULL, locked_until = NULL
             FROM UNNEST($1::uuid[], $2::uuid[]) AS u(id, token)
             WHERE e.id = u.id AND e.lease_token = u.token AND e.status = 'pending'
               AND set_config('synchronous_commit', 'off', true) IS NOT NULL",
            self.table
        ));
        let done = Arc::new(AtomicU64::new(0));
        let loops = (0..processors).map(|p| {
            let (pool, claim, complete, done) = (
                self.pool.clone(),
                claim.clone(),
                complete.clone(),
                done.clone(),
            );
            tokio::spawn(async move {
                loop {
                    // The payload read as checked JSON text, as the library's claims read it.
                    type Text = sqlx::types::Json<Box<serde_json::value::RawValue>>;
                    let leased: Vec<(Uuid, Uuid, Text)> = sqlx::query_as(&claim)
                        .bind(i64::try_from(batch).unwrap_or(100))
                        .bind(format!("raw-{p}"))
                        .fetch_all(&pool)
                        .await
                        .map_err(db)?;
                    if leased.is_empty() {
                        return Ok::<_, BenchError>(());
                    }
                    let (ids, tokens): (Vec<Uuid>, Vec<Uuid>) = leased
                        .into_iter()
                        .map(|(id, token, _payload)| (id, token))
                        .unzip();
                    let r = sqlx::query(&complete)
                        .bind(ids)
                        .bind(tokens)
                        .execute(&pool)
                        .await
                        .map_err(db)?;
                    done.fetch_add(r.rows_affected(), Ordering::Relaxed);
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
        // Statistics reach pg_stat_user_tables with a delay; read a fresh snapshot.
        let _ = sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(&self.pool)
            .await;
        let row: Result<(i64, i64), _> = sqlx::query_as(
            "SELECT pg_total_relation_size(format('%I.%I', $1::text, 'outbox')),
                    COALESCE((SELECT n_dead_tup FROM pg_stat_user_tables
                              WHERE schemaname = $1 AND relname = 'outbox'), 0)",
        )
        .bind(&self.schema)
        .fetch_one(&self.pool)
        .await;
        match row {
            Ok((size, dead)) => vec![
                (
                    "table+indexes".to_owned(),
                    format!("{:.1} MB", size as f64 / 1_048_576.0),
                ),
                ("dead tuples".to_owned(), dead.to_string()),
            ],
            Err(e) => vec![("facts".to_owned(), format!("unavailable: {e}"))],
        }
    }

    async fn maintain(&self) -> Option<String> {
        let autovacuum: Option<String> = sqlx::query_scalar("SELECT current_setting('autovacuum')")
            .fetch_one(&self.pool)
            .await
            .ok();
        if autovacuum.as_deref() == Some("on") {
            return None;
        }
        match self.store.vacuum().await {
            Ok(()) => {
                Some("autovacuum is off on this server: the purger runs PgStore::vacuum".to_owned())
            }
            Err(e) => Some(format!("vacuum failed: {e}")),
        }
    }

    async fn size_bytes(&self) -> Option<u64> {
        sqlx::query_scalar::<_, i64>(
            "SELECT pg_total_relation_size(format('%I.%I', $1::text, 'outbox'))",
        )
        .bind(&self.schema)
        .fetch_one(&self.pool)
        .await
        .ok()
        .and_then(|n| u64::try_from(n).ok())
    }

    async fn hold_snapshot(&self) -> Result<Option<crate::target::SnapshotHold>, BenchError> {
        let url = std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/outbox_test".to_owned());
        let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&url)
            .await
            .map_err(db)?;
        // A snapshot taken by the first statement of a REPEATABLE READ transaction is kept until
        // it ends; it reads nothing of the outbox (as a report on other tables would not).
        sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ")
            .execute(&mut connection)
            .await
            .map_err(db)?;
        sqlx::query("SELECT count(*) FROM pg_class")
            .execute(&mut connection)
            .await
            .map_err(db)?;
        Ok(Some(Box::new(connection)))
    }

    async fn full_walk(&self) -> Option<(std::time::Duration, u64)> {
        let mut tx = self.pool.begin().await.ok()?;
        sqlx::query("SET LOCAL enable_bitmapscan = off")
            .execute(&mut *tx)
            .await
            .ok()?;
        sqlx::query("SET LOCAL enable_sort = off")
            .execute(&mut *tx)
            .await
            .ok()?;
        let plan: serde_json::Value = sqlx::query_scalar(&format!(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT e.id FROM {} e
             WHERE e.status = 'pending' AND e.due_at <= now()
             ORDER BY e.due_at, e.seq LIMIT 1",
            self.table
        ))
        .fetch_one(&mut *tx)
        .await
        .ok()?;
        let top = &plan[0];
        let took = top["Execution Time"].as_f64()?;
        let buffers = top["Plan"]["Shared Hit Blocks"].as_u64().unwrap_or(0)
            + top["Plan"]["Shared Read Blocks"].as_u64().unwrap_or(0);
        Some((std::time::Duration::from_secs_f64(took / 1000.0), buffers))
    }

    async fn vacuum_now(&self) -> Option<String> {
        match sqlx::query(&format!("VACUUM {}", self.table))
            .execute(&self.pool)
            .await
        {
            Ok(_) => Some("VACUUM".to_owned()),
            Err(e) => Some(format!("VACUUM failed: {e}")),
        }
    }

    async fn cleanup(&self) {
        let _ = sqlx::query(&format!("DROP SCHEMA \"{}\" CASCADE", self.schema))
            .execute(&self.pool)
            .await;
    }
}
