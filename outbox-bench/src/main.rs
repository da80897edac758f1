//! `outbox-bench <postgres|redis|redis-cluster|mongo|sqlite> [options]`: runs the four scenarios against one
//! backend and its raw baseline, prints the table and writes it as JSON.

use std::process::ExitCode;

use outbox_bench::Sizes;

const USAGE: &str = "usage: outbox-bench <postgres|redis|redis-cluster|mongo|sqlite> [--reduced] [--events N] \
[--fanout-events N] [--enqueue N] [--rate N] [--seconds S] [--processors 1,2,4] [--batch N] [--json PATH]
  [--scenarios enqueue,drain,latency,fanout,backlog] [--backlog-due N] [--backlog-scheduled N]
  [--backlog-backoff N] [--keyed-events N] [--keys N] [--soak-rate N] [--soak-seconds S]
  [--gauge-processed N] [--held-xmin-rate N] [--held-xmin-seconds S] [--peer]

Scenarios: enqueue, drain, latency, fanout, backlog (all by default); soak (only when named:
a producer at --soak-rate for --soak-seconds, 2,000/s for 600 s by default, with a purger); gauges
(only when named: lag() and stats() timed with --gauge-processed processed events kept, 1,000,000
by default); partitions (redis-cluster, and its default: the drain on a Redis Cluster with the
outbox in 1 and in 8 partitions, each beside the raw baseline); held-xmin (postgres, only when
named: the latency workload at --held-xmin-rate for --held-xmin-seconds, 800/s for 600 s by
default, while another connection holds one snapshot open; keeping and deleting processed events).

--peer (postgres) also drains the same number of events with graphile-worker on the same server
(scripts/peer-graphile.sh installs it with npm) and prints it beside outbox's drain.

Runs against DATABASE_URL, REDIS_URL, REDIS_CLUSTER_URLS or MONGODB_URI (./scripts/services.sh
starts them);
SQLite uses files in a temporary directory. Writes bench-results/<backend>.json unless --json is given.";

fn parse(args: &[String]) -> Result<(String, Sizes, String), String> {
    let backend = args.first().ok_or("missing backend")?.clone();
    let mut sizes = if args.iter().any(|a| a == "--reduced") {
        Sizes::reduced()
    } else {
        Sizes::full()
    };
    let mut json = format!("bench-results/{backend}.json");
    sizes.peer = args.iter().any(|a| a == "--peer");
    let mut rest = args[1..]
        .iter()
        .filter(|a| *a != "--reduced" && *a != "--peer");
    while let Some(flag) = rest.next() {
        let value = rest.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<usize>()
                .map_err(|e| format!("{flag} {value}: {e}"))
        };
        match flag.as_str() {
            "--events" => sizes.drain_events = number()?,
            "--fanout-events" => sizes.fanout_events = number()?,
            "--backlog-due" => sizes.backlog_due = number()?,
            "--backlog-scheduled" => sizes.backlog_scheduled = number()?,
            "--backlog-backoff" => sizes.backlog_backoff = number()?,
            "--keyed-events" => sizes.keyed_events = number()?,
            "--keys" => sizes.keys = number()?,
            "--soak-rate" => {
                sizes.soak_rate = u32::try_from(number()?).map_err(|e| e.to_string())?;
            }
            "--held-xmin-rate" => {
                sizes.held_xmin_rate = u32::try_from(number()?).map_err(|e| e.to_string())?;
            }
            "--held-xmin-seconds" => {
                sizes.held_xmin_seconds = value
                    .parse()
                    .map_err(|e| format!("--held-xmin-seconds {value}: {e}"))?;
            }
            "--soak-seconds" => {
                sizes.soak_seconds = value
                    .parse()
                    .map_err(|e| format!("--soak-seconds {value}: {e}"))?;
            }
            "--gauge-processed" => sizes.gauge_processed = number()?,
            "--enqueue" => sizes.enqueue_single = number()?,
            "--batch" => sizes.batch = number()?,
            "--rate" => {
                sizes.latency_rate = u32::try_from(number()?).map_err(|e| e.to_string())?;
            }
            "--seconds" => {
                sizes.latency_seconds = value
                    .parse()
                    .map_err(|e| format!("--seconds {value}: {e}"))?;
            }
            "--processors" => {
                sizes.processors = value
                    .split(',')
                    .map(|p| {
                        p.trim()
                            .parse::<usize>()
                            .map_err(|e| format!("--processors {value}: {e}"))
                    })
                    .collect::<Result<_, _>>()?;
            }
            "--json" => json = value.clone(),
            "--scenarios" => {
                sizes.scenarios = value.split(',').map(|s| s.trim().to_owned()).collect();
                if let Some(bad) = sizes
                    .scenarios
                    .iter()
                    .find(|s| !outbox_bench::SCENARIOS.contains(&s.as_str()))
                {
                    return Err(format!(
                        "--scenarios: unknown scenario {bad:?}; expected some of {}",
                        outbox_bench::SCENARIOS.join(",")
                    ));
                }
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    if backend == "redis-cluster" && !args.iter().any(|a| a == "--scenarios") {
        sizes.scenarios = vec!["partitions".to_owned()];
    }
    if sizes.batch == 0 || sizes.latency_rate == 0 || sizes.processors.contains(&0) {
        return Err("--batch, --rate and --processors must be positive".to_owned());
    }
    Ok((backend, sizes, json))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let (backend, sizes, json) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(err) => {
            eprintln!("{err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    eprintln!("running {backend} with {sizes:?}");
    let report = match outbox_bench::run(&backend, &sizes).await {
        Ok(report) => report,
        Err(err) => {
            eprintln!("benchmark failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    println!("{}", report.table());
    let written = std::path::Path::new(&json)
        .parent()
        .map_or(Ok(()), |dir| {
            if dir.as_os_str().is_empty() {
                Ok(())
            } else {
                std::fs::create_dir_all(dir)
            }
        })
        .and_then(|()| {
            let text = serde_json::to_string_pretty(&report).map_err(std::io::Error::other)?;
            std::fs::write(&json, text)
        });
    match written {
        Ok(()) => eprintln!("wrote {json}"),
        Err(err) => eprintln!("could not write {json}: {err}"),
    }
    if report.all_checks_passed() {
        ExitCode::SUCCESS
    } else {
        eprintln!("some final-state checks FAILED");
        ExitCode::FAILURE
    }
}
