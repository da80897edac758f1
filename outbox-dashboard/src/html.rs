//! HTML building: escaping, the page frame, tables and the throughput chart.

use std::fmt::Write;

use chrono::{DateTime, Utc};

/// Escapes text for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A time as people read it, or `-`.
pub(crate) fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string(),
    )
}

/// A duration as people read it.
pub(crate) fn duration(d: std::time::Duration) -> String {
    if d < std::time::Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{background:#1d2330;color:#fff;padding:.7rem 1.5rem;display:flex;gap:1.5rem;align-items:center}\
header a{color:#cfd8ff;text-decoration:none}header strong{font-size:1.1rem}\
main{padding:1rem 1.5rem;max-width:1100px}.warn{color:#a33a00;font-weight:600}\
table{border-collapse:collapse;background:#fff;margin:.5rem 0 1.5rem;min-width:320px}\
th,td{border:1px solid #dde1e8;padding:.35rem .7rem;text-align:left;font-size:.92rem;vertical-align:top}\
th{background:#eef1f6}td.n{text-align:right;font-variant-numeric:tabular-nums}\
form.inline{display:inline}button{cursor:pointer;padding:.2rem .6rem}\
.badge{background:#f0b429;color:#1d2330;border-radius:3px;padding:0 .4rem;font-size:.8rem}\
.why{background:#fff;border-left:4px solid #4c6ef5;padding:.5rem .8rem}\
pre{background:#fff;border:1px solid #dde1e8;padding:.6rem;overflow:auto}";

/// A whole page: header with navigation, then `body`.
pub(crate) fn page(base: &str, title: &str, read_only: bool, body: &str, script: &str) -> String {
    let home = if base.is_empty() { "/" } else { base };
    let badge = if read_only {
        " <span class=\"badge\">read-only</span>"
    } else {
        ""
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\
         <title>{title} · outbox</title><style>{STYLE}</style></head><body>\
         <header><strong>outbox</strong><a href=\"{home}\">Overview</a>\
         <a href=\"{base}/dead\">Dead letters</a><a href=\"{base}/corrupt\">Set aside</a>{badge}</header>\
         <main><h1>{title}</h1>{body}</main>{script}</body></html>",
        title = esc(title),
        home = esc(home),
        base = esc(base),
    )
}

/// A table; cells are HTML already (escape text before).
pub(crate) fn table(id: &str, headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = format!("<table id=\"{}\"><thead><tr>", esc(id));
    for h in headers {
        let _ = write!(out, "<th>{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str(cell);
        }
        out.push_str("</tr>");
    }
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\">none</td></tr>",
            headers.len().max(1)
        );
    }
    out.push_str("</tbody></table>");
    out
}

/// A text cell.
pub(crate) fn td(text: &str) -> String {
    format!("<td>{}</td>", esc(text))
}

/// A number cell with an id, so scripts and tests can read it.
pub(crate) fn td_num(id: &str, n: impl std::fmt::Display) -> String {
    if id.is_empty() {
        format!("<td class=\"n\">{n}</td>")
    } else {
        format!("<td class=\"n\" id=\"{}\">{n}</td>", esc(id))
    }
}

/// Events finished per second as an SVG bar chart, newest on the right.
pub(crate) fn throughput_chart(rates: &[(DateTime<Utc>, f64)]) -> String {
    if rates.is_empty() {
        return "<p id=\"throughput\">Collecting samples… (the chart appears after two)</p>"
            .to_owned();
    }
    let (width, height) = (600.0_f64, 120.0_f64);
    let max = rates.iter().map(|(_, r)| *r).fold(1.0_f64, f64::max);
    // At least 30 slots, so a few samples do not make a few very wide bars.
    let bar = width / rates.len().max(30) as f64;
    let mut svg = format!(
        "<svg id=\"throughput\" width=\"{width}\" height=\"{}\" role=\"img\" \
         aria-label=\"events finished per second\" style=\"background:#fff;border:1px solid #dde1e8\">",
        height + 20.0
    );
    for (i, (at, rate)) in rates.iter().enumerate() {
        let h = (rate / max * height).max(if *rate > 0.0 { 1.0 } else { 0.0 });
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#4c6ef5\">\
             <title>{} — {rate:.1}/s</title></rect>",
            i as f64 * bar + 1.0,
            height - h,
            (bar - 2.0).max(1.0),
            at.format("%H:%M:%S"),
        );
    }
    let _ = write!(
        svg,
        "<text x=\"4\" y=\"{}\" font-size=\"12\">peak {max:.1} events/s; latest {:.1}/s</text></svg>",
        height + 15.0,
        rates.last().map_or(0.0, |(_, r)| *r)
    );
    svg
}

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }
}
