//! The schema's history as numbered steps: what each version changed in a table that already
//! exists. `migrate()` runs the steps after the table's recorded version (all of them when none
//! is recorded: a new table, or one of outbox 0.1), then re-creates the current indexes,
//! functions and triggers, which are defined once, at their current form, in
//! [`schema`](crate::schema). Each step is idempotent and guarded, so on a table created at the
//! current layout it changes nothing.
//!
//! Adding a version: append a step here (empty when the version only redefines functions or
//! indexes), bump [`SCHEMA_VERSION`](crate::SCHEMA_VERSION), and describe it in the README's
//! schema section.

/// One version of the schema: what it changed in an existing table.
pub(crate) struct Migration {
    /// The schema version this step brings a table to.
    pub(crate) version: i64,
    /// What the version changed: logged when a table is upgraded through it.
    pub(crate) summary: &'static str,
    /// The statements, for `"schema"."table"`.
    statements: fn(&Names<'_>) -> Vec<String>,
}

/// The quoted names a step's statements use.
pub(crate) struct Names<'a> {
    schema: &'a str,
    table: &'a str,
    /// `"schema"."table"`.
    t: String,
}

impl Names<'_> {
    /// `"schema"."table_suffix"`: an index, function or table beside the events table.
    fn beside(&self, suffix: &str) -> String {
        format!("\"{}\".\"{}_{suffix}\"", self.schema, self.table)
    }
}

/// Every step, oldest first. Version 1 is the layout of outbox 0.1, which recorded no version.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 2,
        summary: "claims walk due rows (the due_at column, filled from the schedule, back-off and \
                  lease of each event); events that do not decode are set aside (status \
                  'corrupt', corrupt_reason); 0.1's claim indexes are replaced",
        statements: due_rows_and_set_aside,
    },
    Migration {
        version: 3,
        summary: "trace context is stored with each event (traceparent)",
        statements: trace_context,
    },
    Migration {
        version: 4,
        summary: "ordering keys are handed off at completion (the completion function without a \
                  hand-off is dropped); the inbox table (created with the objects)",
        statements: hand_off,
    },
    Migration {
        version: 5,
        summary: "ordering keys compare as bytes (C collation); the completion function \
                  <table>_finish answers handed-off events as rows (<table>_complete is left for \
                  schema-4 processes during a rolling deploy)",
        statements: byte_ordering_keys,
    },
    Migration {
        version: 6,
        summary: "the claim takes where its walk starts (long transactions) and saturates the \
                  attempt count (the three-argument claim is left for schema-5 processes); \
                  functions only",
        statements: |_| Vec::new(),
    },
];

/// The statements of every step after `version` (all of them for `None`), in order.
pub(crate) fn after<'a>(
    version: Option<i64>,
    schema: &'a str,
    table: &'a str,
) -> impl Iterator<Item = String> + 'a {
    let names = Names {
        schema,
        table,
        t: format!("\"{schema}\".\"{table}\""),
    };
    steps_after(version).flat_map(move |m| (m.statements)(&names))
}

/// The steps after `version` (all of them for `None`), oldest first.
pub(crate) fn steps_after(version: Option<i64>) -> impl Iterator<Item = &'static Migration> {
    MIGRATIONS
        .iter()
        .filter(move |m| version.is_none_or(|v| m.version > v))
}

fn due_rows_and_set_aside(n: &Names<'_>) -> Vec<String> {
    let (t, table) = (&n.t, n.table);
    vec![
        format!(
            "DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute
                   WHERE attrelid = '{t}'::regclass AND attname = 'due_at' AND NOT attisdropped) THEN
        ALTER TABLE {t} ADD COLUMN due_at TIMESTAMPTZ;
        UPDATE {t} SET due_at = GREATEST(available_at, backoff_until, locked_until);
        ALTER TABLE {t} ALTER COLUMN due_at SET DEFAULT now(), ALTER COLUMN due_at SET NOT NULL;
    END IF;
    ALTER TABLE {t} ADD COLUMN IF NOT EXISTS corrupt_reason TEXT;
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conrelid = '{t}'::regclass AND conname = '{table}_status_check'
                     AND pg_get_constraintdef(oid) LIKE '%corrupt%') THEN
        ALTER TABLE {t} DROP CONSTRAINT IF EXISTS \"{table}_status_check\";
        ALTER TABLE {t} ADD CONSTRAINT \"{table}_status_check\"
            CHECK (status IN ('pending', 'processed', 'dead', 'corrupt'));
    END IF;
END $$"
        ),
        format!("DROP INDEX IF EXISTS {}", n.beside("pending_seq")),
        format!("DROP INDEX IF EXISTS {}", n.beside("finished")),
    ]
}

fn trace_context(n: &Names<'_>) -> Vec<String> {
    vec![format!(
        "ALTER TABLE {} ADD COLUMN IF NOT EXISTS traceparent TEXT",
        n.t
    )]
}

fn hand_off(n: &Names<'_>) -> Vec<String> {
    vec![format!(
        "DROP FUNCTION IF EXISTS {}(uuid[], uuid[], text[], text[], int[], bigint[], boolean)",
        n.beside("complete")
    )]
}

fn byte_ordering_keys(n: &Names<'_>) -> Vec<String> {
    // Ordering keys are only ever compared for equality: byte comparison instead of the
    // database's collation makes every lookup of a key's line cheaper. Rebuilds the key index
    // (pending keyed events only), not the table.
    let t = &n.t;
    vec![format!(
        "DO $$
BEGIN
    IF (SELECT attcollation FROM pg_attribute
        WHERE attrelid = '{t}'::regclass AND attname = 'ordering_key' AND NOT attisdropped)
       <> (SELECT oid FROM pg_collation
           WHERE collname = 'C' AND collnamespace = 'pg_catalog'::regnamespace) THEN
        ALTER TABLE {t} ALTER COLUMN ordering_key TYPE text COLLATE \"C\";
    END IF;
END $$"
    )]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_run_from_two_to_the_current_one_without_gaps() {
        let versions: Vec<i64> = MIGRATIONS.iter().map(|m| m.version).collect();
        let expected: Vec<i64> = (2..=crate::SCHEMA_VERSION).collect();
        assert_eq!(versions, expected);
        assert!(MIGRATIONS.iter().all(|m| !m.summary.is_empty()));
    }

    #[test]
    fn a_recorded_version_runs_only_the_steps_after_it() {
        let all: Vec<String> = after(None, "public", "outbox_events").collect();
        let from_four: Vec<String> = after(Some(4), "public", "outbox_events").collect();
        let current: Vec<String> = after(Some(crate::SCHEMA_VERSION), "public", "e").collect();
        assert!(
            all.iter()
                .any(|s| s.contains("ADD COLUMN IF NOT EXISTS traceparent"))
        );
        assert!(!from_four.iter().any(|s| s.contains("traceparent")));
        assert!(from_four.iter().any(|s| s.contains("COLLATE \"C\"")));
        assert!(current.is_empty());
    }
}
