//! One function per command.

use chrono::{DateTime, Utc};
use outbox_core::{EventRecord, StoreError, StoreExt};
use serde_json::json;
use uuid::Uuid;

use crate::backend::{Backend, CliError};
use crate::fingerprint::fingerprint;
use crate::render::{Output, human};

/// The most dead letters `dead requeue --all` puts back in one call.
const REQUEUE_ALL_MAX: usize = 10_000;

pub(crate) async fn migrate(backend: &Backend, print: bool, out: Output) -> Result<(), CliError> {
    if print {
        let Some(ddl) = backend.ddl() else {
            return Err(CliError::Usage(
                "this backend has no DDL to print (migrate creates what it needs)".to_owned(),
            ));
        };
        out.message(&format!("{};", ddl.join(";\n\n")), &json!({ "ddl": ddl }));
        return Ok(());
    }
    let done = backend.migrate().await?;
    out.message(done, &json!({ "migrated": true, "message": done }));
    Ok(())
}

pub(crate) async fn verify(backend: &Backend, out: Output) -> Result<(), CliError> {
    let done = backend.verify().await?;
    out.message(done, &json!({ "verified": true, "message": done }));
    Ok(())
}

pub(crate) async fn stats(backend: &Backend, out: Output) -> Result<(), CliError> {
    let store = backend.store();
    let s = store.stats().await?;
    let by_type = store.stats_by_type().await?;
    if out.json {
        let mut json = s.to_json();
        json["by_type"] = by_type
            .iter()
            .map(outbox_core::store::TypeStats::to_json)
            .collect();
        println!("{json}");
        return Ok(());
    }
    let rows = vec![
        vec!["pending".to_owned(), s.pending.to_string()],
        vec!["  due now".to_owned(), s.due.to_string()],
        vec!["  leased".to_owned(), s.leased.to_string()],
        vec!["processed (kept)".to_owned(), s.processed.to_string()],
        vec!["dead".to_owned(), s.dead.to_string()],
        vec!["corrupt (set aside)".to_owned(), s.corrupt.to_string()],
        vec!["lag".to_owned(), human(s.oldest_due_age)],
    ];
    out.table(&["status", "events"], &rows, &json!(null));
    if let Some(held) = s.held_back {
        println!();
        let rows = vec![
            vec![
                "oldest open snapshot".to_owned(),
                human(held.oldest_snapshot_age),
            ],
            vec!["dead row versions".to_owned(), held.dead_rows.to_string()],
            vec![
                "claims".to_owned(),
                if held.windowed_claims {
                    "windowed (full walks are slow)"
                } else {
                    "full walks"
                }
                .to_owned(),
            ],
        ];
        out.table(&["cleanup", ""], &rows, &json!(null));
        if held.is_holding_back() {
            println!(
                "\nwarning: a snapshot open for {} holds back the cleanup of the outbox's table \
                 (a long transaction, pg_dump, an idle-in-transaction session or a replica with \
                 hot_standby_feedback); see outbox-postgres's README, \"Long transactions\"",
                human(held.oldest_snapshot_age)
            );
        }
    }
    println!();
    let rows: Vec<Vec<String>> = by_type
        .iter()
        .map(|t| {
            vec![
                t.event_type.clone(),
                t.pending.to_string(),
                t.due.to_string(),
                t.leased.to_string(),
                t.dead.to_string(),
                human(t.oldest_due_age),
            ]
        })
        .collect();
    out.table(
        &["event type", "pending", "due", "leased", "dead", "lag"],
        &rows,
        &json!(null),
    );
    Ok(())
}

pub(crate) async fn lag(backend: &Backend, out: Output) -> Result<(), CliError> {
    let lag = backend.store().lag().await?;
    let ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX);
    out.message(&human(lag), &json!({ "lag_ms": ms }));
    Ok(())
}

pub(crate) async fn explain(backend: &Backend, id: &str, out: Output) -> Result<(), CliError> {
    let id = parse_id(id)?;
    let store = backend.store();
    let Some(record) = store.get(id).await? else {
        return Err(CliError::Usage(format!("no event with id {id}")));
    };
    let head = store.key_head_of(&record).await?;
    let why = outbox_core::ops::explain(&record, head.as_ref(), Utc::now());
    if out.json {
        let json = json!({
            "id": id,
            "status": record.status.as_str(),
            "summary": why.summary,
            "details": why.details,
            "key_head": head.map(|h| h.id),
        });
        println!("{json}");
        return Ok(());
    }
    println!("{id}: {}", why.summary);
    for line in &why.details {
        println!("  - {line}");
    }
    Ok(())
}

pub(crate) async fn show(backend: &Backend, id: &str, out: Output) -> Result<(), CliError> {
    let id = parse_id(id)?;
    let Some(record) = backend.store().get(id).await? else {
        return Err(CliError::Usage(format!("no event with id {id}")));
    };
    if out.json {
        println!("{}", serde_json::to_value(&record).unwrap_or_default());
        return Ok(());
    }
    let time = |t: Option<DateTime<Utc>>| t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339());
    let fields = vec![
        vec!["id".to_owned(), record.id.to_string()],
        vec!["type".to_owned(), record.event_type.clone()],
        vec!["status".to_owned(), record.status.as_str().to_owned()],
        vec!["attempts".to_owned(), record.attempts.to_string()],
        vec!["created".to_owned(), record.created_at.to_rfc3339()],
        vec!["available".to_owned(), record.available_at.to_rfc3339()],
        vec!["back-off until".to_owned(), time(record.backoff_until)],
        vec!["processed".to_owned(), time(record.processed_at)],
        vec![
            "leased by".to_owned(),
            record.locked_by.clone().unwrap_or_else(|| "-".to_owned()),
        ],
        vec!["lease until".to_owned(), time(record.locked_until)],
        vec![
            "ordering key".to_owned(),
            record
                .ordering_key
                .clone()
                .unwrap_or_else(|| "-".to_owned()),
        ],
        vec!["payload".to_owned(), record.payload.to_string()],
    ];
    out.table(&["field", "value"], &fields, &json!(null));
    println!();
    let handlers: Vec<Vec<String>> = record
        .handler_results
        .iter()
        .map(|(name, state)| {
            let status = if state.succeeded_at.is_some() {
                "succeeded"
            } else if state.gave_up {
                "gave up"
            } else {
                "pending"
            };
            vec![
                name.clone(),
                status.to_owned(),
                state.attempts.to_string(),
                state.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out.table(
        &["handler", "state", "attempts", "last error"],
        &handlers,
        &json!(null),
    );
    let mut logs: Vec<(&str, &outbox_core::model::LogEntry)> = record
        .handler_results
        .iter()
        .flat_map(|(name, state)| state.logs.iter().map(move |e| (name.as_str(), e)))
        .collect();
    if !logs.is_empty() {
        logs.sort_by_key(|(_, e)| e.at);
        println!();
        let dropped: u32 = record
            .handler_results
            .values()
            .map(|s| s.logs_dropped)
            .sum();
        if dropped > 0 {
            println!("({dropped} older log entries dropped)");
        }
        let rows: Vec<Vec<String>> = logs
            .iter()
            .map(|(handler, e)| {
                vec![
                    e.at.to_rfc3339(),
                    e.level.as_str().to_owned(),
                    format!("{handler} #{}", e.attempt),
                    e.message.clone(),
                ]
            })
            .collect();
        out.table(
            &["time", "level", "handler", "message"],
            &rows,
            &json!(null),
        );
    }
    Ok(())
}

pub(crate) async fn dead_list(
    backend: &Backend,
    limit: usize,
    out: Output,
) -> Result<(), CliError> {
    let dead = backend.store().dead_letters(limit).await?;
    let rows: Vec<Vec<String>> = dead
        .iter()
        .map(|record| {
            let (handler, error) = gave_up(record);
            vec![
                record.id.to_string(),
                record.event_type.clone(),
                record
                    .processed_at
                    .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
                fingerprint(&handler, &error),
                handler,
                shorten(&error, 80),
            ]
        })
        .collect();
    let json = serde_json::to_value(&dead).unwrap_or_default();
    out.table(
        &["id", "type", "died", "fingerprint", "handler", "last error"],
        &rows,
        &json,
    );
    Ok(())
}

/// Dead letters grouped by error fingerprint, largest group first.
pub(crate) async fn dead_groups(
    backend: &Backend,
    limit: usize,
    out: Output,
) -> Result<(), CliError> {
    let dead = backend.store().dead_letters(limit).await?;
    // fingerprint -> (handler, example error, event type, ids)
    let mut groups: std::collections::BTreeMap<String, (String, String, String, Vec<String>)> =
        std::collections::BTreeMap::new();
    for record in &dead {
        let (handler, error) = gave_up(record);
        let entry = groups
            .entry(fingerprint(&handler, &error))
            .or_insert_with(|| (handler, error, record.event_type.clone(), Vec::new()));
        entry.3.push(record.id.to_string());
    }
    let mut sorted: Vec<_> = groups.into_iter().collect();
    sorted.sort_by(|a, b| b.1.3.len().cmp(&a.1.3.len()).then(a.0.cmp(&b.0)));
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|(fp, (handler, error, event_type, ids))| {
            vec![
                fp.clone(),
                ids.len().to_string(),
                event_type.clone(),
                handler.clone(),
                shorten(error, 80),
            ]
        })
        .collect();
    let json: Vec<_> = sorted
        .iter()
        .map(|(fp, (handler, error, event_type, ids))| {
            json!({
                "fingerprint": fp,
                "count": ids.len(),
                "event_type": event_type,
                "handler": handler,
                "example_error": error,
                "ids": ids,
            })
        })
        .collect();
    out.table(
        &["fingerprint", "count", "type", "handler", "example error"],
        &rows,
        &serde_json::Value::Array(json),
    );
    Ok(())
}

/// The handler that gave up on a dead letter and its last error (empty when none is recorded).
fn gave_up(record: &EventRecord) -> (String, String) {
    record
        .handler_results
        .iter()
        .find(|(_, s)| s.gave_up)
        .map(|(name, s)| (name.clone(), s.last_error.clone().unwrap_or_default()))
        .unwrap_or_default()
}

/// Which dead letters `dead requeue` puts back.
#[derive(Debug)]
pub(crate) enum Requeue {
    /// These ids.
    Ids(Vec<String>),
    /// Every dead letter (up to [`REQUEUE_ALL_MAX`]).
    All,
    /// Every dead letter with this error fingerprint.
    Fingerprint(String),
}

pub(crate) async fn dead_requeue(
    backend: &Backend,
    which: Requeue,
    out: Output,
) -> Result<(), CliError> {
    let store = backend.store();
    let named = matches!(which, Requeue::Ids(_));
    let targets: Vec<Uuid> = match which {
        Requeue::All => store
            .dead_letters(REQUEUE_ALL_MAX)
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect(),
        Requeue::Fingerprint(fp) => store
            .dead_letters(REQUEUE_ALL_MAX)
            .await?
            .into_iter()
            .filter(|r| {
                let (handler, error) = gave_up(r);
                fingerprint(&handler, &error) == fp
            })
            .map(|r| r.id)
            .collect(),
        Requeue::Ids(ids) if ids.is_empty() => {
            return Err(CliError::Usage(
                "name the dead letters to requeue, or pass --all or --fingerprint".to_owned(),
            ));
        }
        Requeue::Ids(ids) => ids
            .iter()
            .map(|id| parse_id(id))
            .collect::<Result<_, _>>()?,
    };
    let mut requeued = Vec::new();
    let mut not_dead = Vec::new();
    for id in targets {
        if store.requeue_dead(id).await? {
            requeued.push(id.to_string());
        } else {
            not_dead.push(id.to_string());
        }
    }
    let text = match not_dead.as_slice() {
        [] => format!("requeued {}", requeued.len()),
        missing => format!(
            "requeued {}; not dead letters: {}",
            requeued.len(),
            missing.join(", ")
        ),
    };
    out.message(
        &text,
        &json!({ "requeued": requeued, "not_dead": not_dead }),
    );
    if not_dead.is_empty() || !named {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "{} of the given ids are not dead letters",
            not_dead.len()
        )))
    }
}

pub(crate) async fn corrupt_list(
    backend: &Backend,
    limit: usize,
    out: Output,
) -> Result<(), CliError> {
    let events = backend.store().corrupt_events(limit).await?;
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                e.id.clone(),
                e.event_type.clone().unwrap_or_else(|| "?".to_owned()),
                e.set_aside_at
                    .map_or_else(|| "-".to_owned(), |t| t.to_rfc3339()),
                shorten(&e.reason, 80),
            ]
        })
        .collect();
    let json: Vec<_> = events
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "event_type": e.event_type,
                "set_aside_at": e.set_aside_at,
                "reason": e.reason,
            })
        })
        .collect();
    out.table(
        &["id", "type", "set aside", "reason"],
        &rows,
        &serde_json::Value::Array(json),
    );
    Ok(())
}

pub(crate) async fn corrupt_requeue(
    backend: &Backend,
    ids: &[String],
    out: Output,
) -> Result<(), CliError> {
    let store = backend.store();
    let mut requeued = Vec::new();
    let mut not_set_aside = Vec::new();
    for id in ids {
        if store.requeue_corrupt(id).await? {
            requeued.push(id.clone());
        } else {
            not_set_aside.push(id.clone());
        }
    }
    out.message(
        &format!("requeued {}", requeued.len()),
        &json!({ "requeued": requeued, "not_set_aside": not_set_aside }),
    );
    if not_set_aside.is_empty() {
        Ok(())
    } else {
        Err(CliError::Usage(format!(
            "not set aside: {}",
            not_set_aside.join(", ")
        )))
    }
}

/// Which finished events a purge deletes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purge {
    /// Processed events.
    Processed,
    /// Dead letters.
    Dead,
}

pub(crate) async fn purge(
    backend: &Backend,
    which: Purge,
    older_than: &str,
    out: Output,
) -> Result<(), CliError> {
    let age = humantime::parse_duration(older_than).map_err(|e| {
        CliError::Usage(format!(
            "--older-than {older_than}: {e} (write e.g. 7d, 12h, 30m)"
        ))
    })?;
    let cutoff = Utc::now()
        - chrono::Duration::from_std(age)
            .map_err(|_| CliError::Usage(format!("--older-than {older_than}: too long")))?;
    let store = backend.store();
    let deleted = match which {
        Purge::Processed => store.purge_processed(cutoff).await?,
        Purge::Dead => store.purge_dead(cutoff).await?,
    };
    out.message(
        &format!("deleted {deleted}"),
        &json!({ "deleted": deleted, "older_than": cutoff }),
    );
    Ok(())
}

fn parse_id(id: &str) -> Result<Uuid, CliError> {
    Uuid::parse_str(id).map_err(|e| {
        CliError::Store(StoreError::invalid(format!(
            "`{id}` is not an event id: {e}"
        )))
    })
}

fn shorten(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max {
        return one_line;
    }
    let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}
