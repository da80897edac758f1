// The held-xmin workload for graphile-worker: a producer adds one job per transaction at RATE jobs/s
// for SECONDS while another connection holds one REPEATABLE READ snapshot open; one worker process
// (concurrency 24, LISTEN/NOTIFY wake-ups) records when each job starts. Prints one JSON line:
// add→start p50/p99/max overall and per 10-second window (by add time), the achieved rate, and the
// jobs table's size and dead tuples sampled every 10 s and after the snapshot is released.
//
// The producer runs in a child process of its own (as outbox-bench's producer runs beside, not
// inside, the workers' runtime): in one Node process its timers and the worker's job handling
// share one event loop, and the producer fell far behind its rate. Both processes stamp times
// with `performance.timeOrigin + performance.now()` (milliseconds since the epoch, sub-ms), so the
// producer's "add returned" and the worker's "job started" compare on the machine's one clock.
//
// usage: node graphile_latency.mjs RATE SECONDS [HOLD=1]
import { fork } from "node:child_process";
import { fileURLToPath } from "node:url";
import { run, Logger } from "graphile-worker";
import pg from "pg";

const connectionString = process.env.PGURL;
const now = () => performance.timeOrigin + performance.now();

if (process.argv[2] === "produce") {
  await produce(Number(process.argv[3]), Number(process.argv[4]));
  process.exit(0);
}

/// The child: adds jobs at `rate` per second for `seconds`, one per transaction, through a pool of
/// 8 connections, and sends the parent when each add returned. It stops at the end of its window
/// even when the server did not let it reach the rate (with a snapshot held, graphile-worker's
/// adds slowed to about a tenth of 800/s): `attempted` says how many it sent.
async function produce(rate, seconds) {
  const pool = new pg.Pool({ connectionString, max: 8 });
  const total = Math.round(rate * seconds);
  const added = new Float64Array(total).fill(NaN);
  let inFlight = 0, errors = 0;
  const payload = (n) => ({ n, email: `user${n}@example.com`, note: "x".repeat(96) });
  const began = now();
  let attempted = 0;
  for (let n = 0; n < total && now() < began + seconds * 1000; n++) {
    attempted = n + 1;
    const wait = began + (n * 1000) / rate - now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    while (inFlight >= 64) await new Promise((r) => setTimeout(r, 1));
    inFlight += 1;
    pool.query("SELECT graphile_worker.add_job('bench', $1::json)", [JSON.stringify(payload(n))])
      .then(() => { added[n] = now(); })
      .catch(() => { errors += 1; })
      .finally(() => { inFlight -= 1; });
  }
  while (inFlight > 0) await new Promise((r) => setTimeout(r, 5));
  const producedSeconds = (now() - began) / 1000;
  await pool.end();
  await new Promise((r) => process.send({ began, added, attempted, errors, producedSeconds }, r));
}

const [rate, seconds] = process.argv.slice(2, 4).map(Number);
const hold = (process.argv[4] ?? "1") !== "0";
const quiet = new Logger(() => () => {});
const db = new pg.Client({ connectionString });
await db.connect();
const installer = await run({
  connectionString, concurrency: 1, noHandleSignals: true, pollInterval: 60000,
  taskList: { bench: async () => {} }, logger: quiet,
});
await installer.stop();
await db.query("DELETE FROM graphile_worker._private_jobs");
await db.query("VACUUM ANALYZE graphile_worker._private_jobs");

const startedAt = new Map();
const runner = await run({
  connectionString, concurrency: 24, noHandleSignals: true, pollInterval: 2000, logger: quiet,
  taskList: { bench: async (payload) => { if (!startedAt.has(payload.n)) startedAt.set(payload.n, now()); } },
});

const holder = new pg.Client({ connectionString });
await holder.connect();
if (hold) {
  await holder.query("BEGIN ISOLATION LEVEL REPEATABLE READ");
  await holder.query("SELECT count(*) FROM pg_class");
}
const facts = async () => {
  await db.query("SELECT pg_stat_clear_snapshot()");
  const { rows } = await db.query(
    `SELECT pg_total_relation_size('graphile_worker._private_jobs')::float8 / 1048576 AS mb,
            COALESCE((SELECT n_dead_tup FROM pg_stat_user_tables
                      WHERE schemaname = 'graphile_worker' AND relname = '_private_jobs'), 0)::int AS dead`);
  return rows[0];
};
const began = now();
const trend = [];
const sampler = setInterval(async () => {
  const f = await facts();
  trend.push(`${((now() - began) / 1000).toFixed(0)}s: table+indexes ${f.mb.toFixed(1)} MB, dead tuples ${f.dead}`);
}, 10000);

const producer = fork(fileURLToPath(import.meta.url), ["produce", String(rate), String(seconds)], {
  serialization: "advanced", stdio: ["ignore", "ignore", "inherit", "ipc"],
});
const produced = await new Promise((resolve, reject) => {
  producer.once("message", resolve);
  producer.once("exit", (code) => reject(new Error(`the producer exited with ${code}`)));
});
const total = produced.attempted;
while (startedAt.size < total - produced.errors && now() - began < (seconds + 600) * 1000) {
  await new Promise((r) => setTimeout(r, 20));
}
clearInterval(sampler);
const held = await facts();
if (hold) await holder.query("COMMIT");
await holder.end();
await db.query("VACUUM graphile_worker._private_jobs");
const vacuumed = await facts();
await runner.stop();
await db.end();

const pct = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.round((p / 100) * (sorted.length - 1)))] : 0;
const all = [];
const windows = [];
produced.added.forEach((at, n) => {
  const s = startedAt.get(n);
  if (Number.isNaN(at) || s === undefined) return;
  const ms = s - at;
  const w = Math.floor((at - produced.began) / 10000);
  (windows[w] ??= []).push(ms);
  all.push(ms);
});
all.sort((a, b) => a - b);
const perWindow = windows.map((w, i) => {
  w.sort((a, b) => a - b);
  return { from_s: i * 10, p50: pct(w, 50), p99: pct(w, 99), max: w[w.length - 1] };
});
console.log(JSON.stringify({
  system: "graphile-worker", rate, seconds, held_snapshot: hold, offered: Math.round(rate * seconds),
  jobs: total, measured: all.length,
  started: startedAt.size, errors: produced.errors,
  per_s: total / produced.producedSeconds, p50: pct(all, 50), p99: pct(all, 99), max: all[all.length - 1] ?? 0,
  worst_window_p99: Math.max(0, ...perWindow.map((w) => w.p99)), windows: perWindow, trend,
  held_mb: held.mb, held_dead: held.dead, vacuumed_mb: vacuumed.mb, vacuumed_dead: vacuumed.dead,
}));
