// The held-xmin workload for graphile-worker: a producer adds one job per transaction at RATE jobs/s
// for SECONDS while another connection holds one REPEATABLE READ snapshot open; one worker process
// (concurrency 24, LISTEN/NOTIFY wake-ups) records when each job starts. Prints one JSON line:
// add→start p50/p99/max overall and per 10-second window (by add time), the achieved rate, and the
// jobs table's size and dead tuples sampled every 10 s and after the snapshot is released.
//
// usage: node graphile_latency.mjs RATE SECONDS [HOLD=1]
import { run, Logger } from "graphile-worker";
import pg from "pg";

const [rate, seconds] = process.argv.slice(2, 4).map(Number);
const hold = (process.argv[4] ?? "1") !== "0";
const connectionString = process.env.PGURL;
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

const added = new Map();
const startedAt = new Map();
const runner = await run({
  connectionString, concurrency: 24, noHandleSignals: true, pollInterval: 2000, logger: quiet,
  taskList: { bench: async (payload) => { if (!startedAt.has(payload.n)) startedAt.set(payload.n, performance.now()); } },
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
const began = performance.now();
const trend = [];
const sampler = setInterval(async () => {
  const f = await facts();
  trend.push(`${((performance.now() - began) / 1000).toFixed(0)}s: table+indexes ${f.mb.toFixed(1)} MB, dead tuples ${f.dead}`);
}, 10000);

const pool = new pg.Pool({ connectionString, max: 8 });
const total = Math.round(rate * seconds);
let inFlight = 0, errors = 0;
const payload = (n) => ({ n, email: `user${n}@example.com`, note: "x".repeat(96) });
for (let n = 0; n < total; n++) {
  const due = began + (n * 1000) / rate;
  const wait = due - performance.now();
  if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  while (inFlight >= 64) await new Promise((r) => setTimeout(r, 1));
  inFlight += 1;
  pool.query("SELECT graphile_worker.add_job('bench', $1::json)", [JSON.stringify(payload(n))])
    .then(() => { added.set(n, performance.now()); })
    .catch(() => { errors += 1; })
    .finally(() => { inFlight -= 1; });
}
const produced = (performance.now() - began) / 1000;
while (startedAt.size < total - errors && performance.now() - began < (seconds + 600) * 1000) {
  await new Promise((r) => setTimeout(r, 20));
}
clearInterval(sampler);
const held = await facts();
if (hold) await holder.query("COMMIT");
await holder.end();
await db.query("VACUUM graphile_worker._private_jobs");
const vacuumed = await facts();
await runner.stop();
await pool.end();
await db.end();

const pct = (sorted, p) => sorted.length ? sorted[Math.min(sorted.length - 1, Math.round((p / 100) * (sorted.length - 1)))] : 0;
const all = [];
const windows = [];
for (const [n, at] of added) {
  const s = startedAt.get(n);
  if (s === undefined) continue;
  const ms = s - at;
  const w = Math.floor((at - began) / 10000);
  (windows[w] ??= []).push(ms);
  all.push(ms);
}
all.sort((a, b) => a - b);
const perWindow = windows.map((w, i) => {
  w.sort((a, b) => a - b);
  return { from_s: i * 10, p50: pct(w, 50), p99: pct(w, 99), max: w[w.length - 1] };
});
console.log(JSON.stringify({
  system: "graphile-worker", rate, seconds, held_snapshot: hold, jobs: total, measured: all.length, errors,
  per_s: total / produced, p50: pct(all, 50), p99: pct(all, 99), max: all[all.length - 1] ?? 0,
  worst_window_p99: Math.max(0, ...perWindow.map((w) => w.p99)), windows: perWindow, trend,
  held_mb: held.mb, held_dead: held.dead, vacuumed_mb: vacuumed.mb, vacuumed_dead: vacuumed.dead,
}));
