//! The README's first command works: the quickstart exits 0 with the expected final state.

use std::process::Command;

#[test]
fn quickstart_completes_and_reports_its_final_state() {
    let output = Command::new(env!("CARGO_BIN_EXE_quickstart"))
        .output()
        .expect("the quickstart binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
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
}
