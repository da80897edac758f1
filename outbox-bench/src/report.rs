//! The results of one run: rows of measurements, final-state checks, printed as a table and saved
//! as JSON.

use std::fmt::Write as _;

use serde::Serialize;

/// One measurement: the library against its raw baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario (`enqueue`, `drain`, `latency`, `fanout`).
    pub scenario: String,
    /// Variant (`1 per tx`, `P=2`, `wake-ups`, …).
    pub variant: String,
    /// Events in the measurement.
    pub events: u64,
    /// Library throughput, events per second (`None` where it is not the measure).
    pub outbox_per_s: Option<f64>,
    /// Raw baseline throughput, events per second.
    pub raw_per_s: Option<f64>,
    /// outbox / raw.
    pub ratio: Option<f64>,
    /// Benchmark-process CPU time per event for the library run, microseconds.
    pub cpu_us_per_event: Option<f64>,
    /// Benchmark-process CPU time per event for the raw run, microseconds.
    pub raw_cpu_us_per_event: Option<f64>,
    /// Database-server CPU time per event for the library run, microseconds (local servers only).
    pub server_cpu_us_per_event: Option<f64>,
    /// Database-server CPU time per event for the raw run, microseconds.
    pub raw_server_cpu_us_per_event: Option<f64>,
    /// Latency percentiles in milliseconds (p50, p99, max), for the latency scenario.
    pub latency_ms: Option<[f64; 3]>,
    /// Anything else (table size, dead tuples).
    pub notes: String,
}

impl Row {
    /// A row with only its names and event count.
    pub fn empty(scenario: &str, variant: &str, events: u64) -> Self {
        Self {
            scenario: scenario.to_owned(),
            variant: variant.to_owned(),
            events,
            outbox_per_s: None,
            raw_per_s: None,
            ratio: None,
            cpu_us_per_event: None,
            raw_cpu_us_per_event: None,
            server_cpu_us_per_event: None,
            raw_server_cpu_us_per_event: None,
            latency_ms: None,
            notes: String::new(),
        }
    }

    /// A throughput row.
    pub fn throughput(
        scenario: &str,
        variant: &str,
        events: u64,
        outbox: Measured,
        raw: Option<Measured>,
    ) -> Self {
        let outbox_per_s = outbox.per_second(events);
        let raw_per_s = raw.map(|r| r.per_second(events));
        Self {
            scenario: scenario.to_owned(),
            variant: variant.to_owned(),
            events,
            outbox_per_s: Some(outbox_per_s),
            raw_per_s,
            ratio: raw_per_s.map(|r| outbox_per_s / r),
            cpu_us_per_event: Some(outbox.cpu_us_per_event(events)),
            raw_cpu_us_per_event: raw.map(|r| r.cpu_us_per_event(events)),
            server_cpu_us_per_event: outbox.server_cpu_us_per_event(events),
            raw_server_cpu_us_per_event: raw.and_then(|r| r.server_cpu_us_per_event(events)),
            latency_ms: None,
            notes: String::new(),
        }
    }
}

/// Wall time and process CPU time of one run.
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    /// Wall-clock seconds.
    pub seconds: f64,
    /// CPU seconds of this process (user + system).
    pub cpu_seconds: f64,
    /// CPU seconds of the local database server's processes, when it runs on this machine.
    pub server_cpu_seconds: Option<f64>,
}

impl Measured {
    fn per_second(self, events: u64) -> f64 {
        events as f64 / self.seconds.max(1e-9)
    }
    fn cpu_us_per_event(self, events: u64) -> f64 {
        self.cpu_seconds * 1e6 / (events.max(1) as f64)
    }
    fn server_cpu_us_per_event(self, events: u64) -> Option<f64> {
        self.server_cpu_seconds
            .map(|s| s * 1e6 / (events.max(1) as f64))
    }
}

/// A final-state check (no event lost, none double-recorded, …).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub passed: bool,
    /// What was seen.
    pub detail: String,
}

/// Everything one run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The backend.
    pub backend: String,
    /// The sizes used.
    pub sizes: crate::Sizes,
    /// CPU model and core count, read from the machine.
    pub machine: String,
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// Measurements.
    pub rows: Vec<Row>,
    /// Final-state checks.
    pub checks: Vec<Check>,
}

fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) => format!("{v:.2}"),
        None => "—".to_owned(),
    }
}

impl Report {
    /// Whether every check held.
    pub fn all_checks_passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The report as a Markdown table (what the binary prints).
    pub fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "backend: {} · machine: {} · started {}",
            self.backend, self.machine, self.started_at
        );
        let _ = writeln!(
            out,
            "\n| scenario | variant | events | outbox ev/s | raw ev/s | outbox/raw | client CPU µs/ev (outbox / raw) | server CPU µs/ev (outbox / raw) | p50 / p99 / max ms | notes |"
        );
        let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---|");
        for r in &self.rows {
            let latency = r.latency_ms.map_or_else(
                || "—".to_owned(),
                |[a, b, c]| format!("{a:.1} / {b:.1} / {c:.1}"),
            );
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} / {} | {} / {} | {} | {} |",
                r.scenario,
                r.variant,
                r.events,
                num(r.outbox_per_s),
                num(r.raw_per_s),
                num(r.ratio),
                num(r.cpu_us_per_event),
                num(r.raw_cpu_us_per_event),
                num(r.server_cpu_us_per_event),
                num(r.raw_server_cpu_us_per_event),
                latency,
                r.notes
            );
        }
        let _ = writeln!(out, "\nchecks:");
        for c in &self.checks {
            let _ = writeln!(
                out,
                "  [{}] {}: {}",
                if c.passed { "ok" } else { "FAILED" },
                c.what,
                c.detail
            );
        }
        out
    }
}

/// CPU seconds (user + system, all threads) used by this process so far, from `/proc/self/stat`
/// (resolution 10 ms: Linux reports it in USER_HZ = 100 ticks per second). 0 elsewhere.
pub fn process_cpu_seconds() -> f64 {
    cpu_seconds_at("/proc/self/stat").unwrap_or(0.0)
}

/// CPU seconds used so far by process `pid` on this machine, `None` when it is not here.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    cpu_seconds_at(&format!("/proc/{pid}/stat"))
}

fn cpu_seconds_at(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces, so split after its closing paren).
    let rest = stat.rsplit_once(')').map(|(_, r)| r)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Some((ticks(11) + ticks(12)) / 100.0)
}

/// The database server processes whose CPU time a run reports, by process name; set once per run
/// from the backend ([`count_server_processes`]).
static SERVER_PROCESSES: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();

/// Chooses whose CPU time [`server_cpu_seconds`] counts: the server of `backend` only, so that
/// another database's processes starting or exiting on this machine do not enter the figure.
pub fn count_server_processes(backend: &str) {
    let names: &'static [&'static str] = match backend {
        "postgres" => &["postgres"],
        "redis" | "redis-cluster" => &["redis-server"],
        "mongo" => &["secantusd-rs", "mongod"],
        _ => &[],
    };
    let _ = SERVER_PROCESSES.set(names);
}

/// CPU seconds used so far by the benchmarked database server's processes running on this machine
/// (PostgreSQL backends, Redis, the MongoDB server), from `/proc`; `None` when none runs here.
/// Processes that exit during a measurement take their time with them, so a difference of two
/// readings can come out negative: callers treat that as unknown.
pub fn server_cpu_seconds() -> Option<f64> {
    let names = SERVER_PROCESSES.get().copied().unwrap_or(&[]);
    let mut ticks = 0.0;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let name = head.split_once('(').map_or("", |(_, n)| n);
        if !names.contains(&name) {
            continue;
        }
        found = true;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| {
            fields
                .get(i)
                .and_then(|f| f.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        ticks += tick(11) + tick(12);
    }
    found.then_some(ticks / 100.0)
}

/// The CPU model and core count of this machine.
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    format!("{model}, {cores} cores")
}
