//! `outbox`: operate an outbox on any store from the command line.
//!
//! ```text
//! outbox --url postgres://localhost/app stats
//! outbox --url sqlite:app.db dead list
//! outbox --url redis://localhost dead requeue --all
//! outbox --url redis-cluster://10.0.0.1:7000,10.0.0.2:7000 --table billing stats
//! outbox --url mongodb://localhost/?directConnection=true show 0193…
//! ```
//!
//! Human tables by default, `--json` for scripts. The URL may also come from `OUTBOX_URL`.

mod backend;
mod commands;
mod fingerprint;
mod render;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::backend::{Backend, Names};

/// Operate an outbox: schema, counts, lag, dead letters, set-aside events, purges.
#[derive(Debug, Parser)]
#[command(name = "outbox", version, about)]
struct Cli {
    /// The store: postgres://…, sqlite:PATH, redis://…, redis-cluster://HOST:PORT,HOST:PORT…,
    /// mongodb://…
    #[arg(long, env = "OUTBOX_URL", global = true)]
    url: Option<String>,
    /// PostgreSQL schema (default `public`).
    #[arg(long, global = true)]
    schema: Option<String>,
    /// Table or collection (default `outbox_events`); for Redis, the outbox name (default `default`).
    #[arg(long, global = true)]
    table: Option<String>,
    /// MongoDB database (default `outbox`).
    #[arg(long, global = true)]
    database: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create or upgrade the schema (no-op when current); `--print` shows the DDL instead.
    Migrate {
        /// Print the DDL (PostgreSQL, SQLite) instead of running it.
        #[arg(long)]
        print: bool,
    },
    /// Check the schema without changing it (read-only rights suffice).
    Verify,
    /// Counts per status and the lag of the oldest due event, then per event type (pending, due,
    /// leased, dead, lag).
    Stats,
    /// How long the oldest due event has waited (cheap: one index entry).
    Lag,
    /// One event: its record and every handler's state.
    Show {
        /// The event id.
        id: String,
    },
    /// Why an event is not running now: scheduled, backing off, leased, waiting behind its
    /// ordering key's head, or due; and each handler's state.
    Explain {
        /// The event id.
        id: String,
    },
    /// Dead letters: events whose handlers gave up.
    #[command(subcommand)]
    Dead(DeadCommand),
    /// Events set aside because they do not decode.
    #[command(subcommand)]
    Corrupt(CorruptCommand),
    /// Delete processed events older than a given age.
    PurgeProcessed {
        /// Age, e.g. `7d`, `12h`, `30m`.
        #[arg(long)]
        older_than: String,
    },
}

#[derive(Debug, Subcommand)]
enum DeadCommand {
    /// List dead letters, oldest first, with the handler that gave up and its last error.
    List {
        /// At most this many (before grouping).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// One line per error fingerprint (handler and error with ids and numbers left out), with
        /// counts.
        #[arg(long)]
        group: bool,
    },
    /// Put dead letters back in the queue (their failed handlers run again).
    Requeue {
        /// Event ids.
        ids: Vec<String>,
        /// Every dead letter (up to 10,000 per call).
        #[arg(long, conflicts_with_all = ["ids", "fingerprint"])]
        all: bool,
        /// Every dead letter with this error fingerprint (as `dead list --group` shows it).
        #[arg(long, conflicts_with = "ids")]
        fingerprint: Option<String>,
    },
    /// Delete dead letters older than a given age.
    Purge {
        /// Age, e.g. `30d`.
        #[arg(long)]
        older_than: String,
    },
}

#[derive(Debug, Subcommand)]
enum CorruptCommand {
    /// List set-aside events with the reason they do not decode.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Put set-aside events back in the queue (after fixing their stored data).
    Requeue {
        /// Event ids, as `corrupt list` shows them.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    report_store_warnings();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("outbox: {err}");
            ExitCode::FAILURE
        }
    }
}

/// What the stores log at warning level or above — a row left out of a listing because it does
/// not decode (C11), a partition that did not answer — goes to stderr, so an operator sees that a
/// listing is short and why; `RUST_LOG` overrides the level.
fn report_store_warnings() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .compact()
        .init();
}

async fn run(cli: Cli) -> Result<(), backend::CliError> {
    let url = cli.url.ok_or_else(|| {
        backend::CliError::Usage("no store given: pass --url or set OUTBOX_URL".to_owned())
    })?;
    let names = Names {
        schema: cli.schema,
        table: cli.table,
        database: cli.database,
    };
    let create = matches!(cli.command, Command::Migrate { print: false });
    let backend = Backend::open(&url, &names, create).await?;
    let out = render::Output { json: cli.json };
    match cli.command {
        Command::Migrate { print } => commands::migrate(&backend, print, out).await,
        Command::Verify => commands::verify(&backend, out).await,
        Command::Stats => commands::stats(&backend, out).await,
        Command::Lag => commands::lag(&backend, out).await,
        Command::Show { id } => commands::show(&backend, &id, out).await,
        Command::Explain { id } => commands::explain(&backend, &id, out).await,
        Command::Dead(DeadCommand::List { limit, group }) => {
            if group {
                commands::dead_groups(&backend, limit, out).await
            } else {
                commands::dead_list(&backend, limit, out).await
            }
        }
        Command::Dead(DeadCommand::Requeue {
            ids,
            all,
            fingerprint,
        }) => {
            let which = match (all, fingerprint) {
                (true, _) => commands::Requeue::All,
                (false, Some(fp)) => commands::Requeue::Fingerprint(fp),
                (false, None) => commands::Requeue::Ids(ids),
            };
            commands::dead_requeue(&backend, which, out).await
        }
        Command::Dead(DeadCommand::Purge { older_than }) => {
            commands::purge(&backend, commands::Purge::Dead, &older_than, out).await
        }
        Command::Corrupt(CorruptCommand::List { limit }) => {
            commands::corrupt_list(&backend, limit, out).await
        }
        Command::Corrupt(CorruptCommand::Requeue { ids }) => {
            commands::corrupt_requeue(&backend, &ids, out).await
        }
        Command::PurgeProcessed { older_than } => {
            commands::purge(&backend, commands::Purge::Processed, &older_than, out).await
        }
    }
}
