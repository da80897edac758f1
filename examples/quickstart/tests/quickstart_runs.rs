//! The README's first command works: the quickstart exits 0 with the expected final state, on the
//! embedded default and on PostgreSQL.

use std::process::Command;

fn run(database_url: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_quickstart"));
    match database_url {
        Some(url) => command.env("DATABASE_URL", url),
        None => command.env_remove("DATABASE_URL"),
    };
    let output = command.output().expect("the quickstart binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "quickstart failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("events:     3 processed, 0 dead, 0 pending"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            r#"users:      ["ada@example.com", "grace@example.com", "linus@example.com"]"#
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("audit_log (another crate) saw 3 events"),
        "{stdout}"
    );
    assert!(
        stdout.contains("-> CRM unavailable, will retry"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("[send_welcome_email] to mallory"),
        "rolled-back invite was delivered:\n{stdout}"
    );
    stdout
}

#[test]
fn quickstart_on_the_embedded_default() {
    let stdout = run(None);
    assert!(stdout.contains("store: SQLite file"), "{stdout}");
}

#[test]
fn quickstart_on_postgres() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/outbox_test".to_owned());
    let stdout = run(Some(&url));
    assert!(stdout.contains("store: PostgreSQL"), "{stdout}");
}
