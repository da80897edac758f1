// Drains N no-op jobs with graphile-worker on the PostgreSQL database at PGURL, with the payload
// shape of outbox-bench's events, and prints one JSON line: events/s and the Node process's CPU
// per job. graphile-worker deletes finished jobs.
//
// usage: node graphile_drain.mjs N CONCURRENCY LOCAL_QUEUE_SIZE
import { run, Logger } from "graphile-worker";
import pg from "pg";

const [n, concurrency, localQueue] = process.argv.slice(2).map(Number);
const connectionString = process.env.PGURL;
const quiet = new Logger(() => () => {});
const db = new pg.Client({ connectionString });
await db.connect();

// Install (or upgrade) graphile-worker's schema, then start from an empty queue.
const installer = await run({
  connectionString, concurrency: 1, noHandleSignals: true, pollInterval: 60000,
  taskList: { noop: async () => {} }, logger: quiet,
});
await installer.stop();
await db.query("DELETE FROM graphile_worker._private_jobs");
await db.query(
  `SELECT graphile_worker.add_jobs(ARRAY(
     SELECT json_populate_record(NULL::graphile_worker.job_spec, json_build_object(
       'identifier', 'noop',
       'payload', json_build_object('n', i, 'email', 'user' || i || '@example.com', 'note', repeat('x', 96))))
     FROM generate_series(1, $1) AS i))`,
  [n],
);
await db.query("VACUUM ANALYZE graphile_worker._private_jobs");

let handled = 0;
const started = process.hrtime.bigint();
const cpu = process.cpuUsage();
const runner = await run({
  connectionString, concurrency, noHandleSignals: true, pollInterval: 1000, logger: quiet,
  taskList: { noop: async () => { handled += 1; } },
  preset: { worker: { localQueue: { size: localQueue }, completeJobBatchDelay: 0 } },
});
for (;;) {
  const { rows } = await db.query("SELECT count(*)::int AS left FROM graphile_worker._private_jobs");
  if (rows[0].left === 0) break;
  await new Promise((resolve) => setTimeout(resolve, 20));
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
const used = process.cpuUsage(cpu);
await runner.stop();
await db.end();
console.log(JSON.stringify({
  system: "graphile-worker", events: n, concurrency, local_queue: localQueue, handled,
  seconds, per_s: n / seconds, cpu_us_per_event: (used.user + used.system) / n,
}));
