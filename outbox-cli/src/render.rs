//! Output: aligned tables for people, JSON for scripts.

use serde_json::Value;

/// How to print.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Output {
    /// JSON instead of tables.
    pub(crate) json: bool,
}

impl Output {
    /// Prints `rows` under `headers` as a table, or `json` when asked for JSON.
    pub(crate) fn table(self, headers: &[&str], rows: &[Vec<String>], json: &Value) {
        if self.json {
            println!("{json}");
            return;
        }
        if rows.is_empty() {
            println!("(none)");
            return;
        }
        let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
        for row in rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let padded: Vec<String> = cells
                .iter()
                .zip(&widths)
                .map(|(c, w)| format!("{c:<w$}"))
                .collect();
            println!("{}", padded.join("  ").trim_end());
        };
        line(headers.to_vec());
        line(
            widths
                .iter()
                .map(|w| "-".repeat(*w))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str)
                .collect(),
        );
        for row in rows {
            line(row.iter().map(String::as_str).collect());
        }
    }

    /// Prints a message, or `json` when asked for JSON.
    pub(crate) fn message(self, text: &str, json: &Value) {
        if self.json {
            println!("{json}");
        } else {
            println!("{text}");
        }
    }
}

/// A duration as people read it: `1.2s`, `3m 20s`.
pub(crate) fn human(duration: std::time::Duration) -> String {
    if duration < std::time::Duration::from_secs(1) {
        return format!("{}ms", duration.as_millis());
    }
    let rounded = std::time::Duration::from_secs(duration.as_secs());
    humantime::format_duration(rounded).to_string()
}
