// The modes the peer harness (peers-bench/bullmq/bench.js) lacks, same protocol and Redis:
//   node bench/bullmq_extra.js memory --n 100000 --payload small|300
//       Redis memory per waiting job (INFO used_memory before/after Queue.addBulk of N jobs), then
//       per retained completed job (MEMORY USAGE of 1000 completed job hashes plus their share
//       of the completed set, after a Worker ran them with removeOnComplete: false); then per
//       failed job (1000 jobs of another queue whose handler throws two calls deep, attempts 1,
//       removeOnFail: false: MEMORY USAGE of the job hashes, which keep the stack, plus their
//       share of the failed set), beside tq's dead record and dead letter.
//   node bench/bullmq_extra.js concurrent --n 20000 --concurrency 100
//       --concurrency async callers each doing `await queue.add` one job at a time until N jobs, no
//       worker -> enqueue jobs/s (tq_bench.py concurrent does the same with Producer.enqueue).
//   node bench/bullmq_extra.js cpu --n 50000 --concurrency 50
//       Redis CPU per job: INFO cpu (used_cpu_sys + used_cpu_user) before and after Queue.addBulk
//       of N no-op jobs plus their processing by one Worker (removeOnComplete: true, as the
//       harness's throughput run).
//   node bench/bullmq_extra.js latency-open --n 30000 --rate 10000 --concurrency 50 --harness <bench.js>
//       enqueue->done from an open loop: each job's Queue.add is started at its scheduled time
//       without waiting for the previous one (the calls share ioredis's connection, as a web app's
//       requests do), run by the peer harness's own worker process (`bench.js worker`, which records
//       t0 -> start -> completed); the same protocol as `tq_bench.py latency --variant async+open`.
//       Node's timers fire per millisecond: jobs due within one are started together.
// Needs NODE_PATH with bullmq and ioredis (bench/run.sh sets it). The DB is FLUSHED.
'use strict';
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');
const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { performance } = require('perf_hooks');

const REDIS_URL = process.env.PEERBENCH_REDIS_URL || 'redis://127.0.0.1:6391/0';
const QUEUE = 'peerbench';
const conn = () => new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
const version = require('bullmq/package.json').version;

function parseArgs(argv) {
  const a = { mode: argv[0], n: 100000, concurrency: 50, chunk: 1000, payload: 'small', retained: 1000, rate: 10000,
    timeout: 300, harness: '' };
  for (let i = 1; i < argv.length; i += 2) {
    const k = argv[i].replace(/^--/, '');
    a[k] = ['payload', 'harness'].includes(k) ? argv[i + 1] : Number(argv[i + 1]);
  }
  return a;
}

// The benchmark payload {"n": i}, or a realistic one of about 300 bytes of JSON.
const PAD = 'x'.repeat(280);
// The CPU run sends the harness's payload {t0: now}, as tq's throughput run does.
const payload = (a, i) => (a.mode === 'cpu' ? { t0: Date.now() / 1000 } : a.payload === '300' ? { n: i, s: PAD } : { n: i });

async function info(r, section, field) {
  const text = await r.info(section);
  const m = text.match(new RegExp(`^${field}:([0-9.]+)`, 'm'));
  return Number(m[1]);
}

async function cpuSeconds(r) {
  return (await info(r, 'cpu', 'used_cpu_sys')) + (await info(r, 'cpu', 'used_cpu_user'));
}

async function addAll(q, a, opts) {
  for (let base = 0; base < a.n; base += a.chunk) {
    const jobs = [];
    for (let i = base; i < Math.min(a.n, base + a.chunk); i++) jobs.push({ name: 'noop', data: payload(a, i), opts });
    await q.addBulk(jobs);
  }
}

function drain(a, opts) {
  return new Promise((resolve, reject) => {
    let done = 0;
    const w = new Worker(QUEUE, async () => {}, { connection: conn(), concurrency: a.concurrency, ...opts });
    w.on('completed', () => { if (++done === a.n) w.close().then(resolve, reject); });
    w.on('error', reject);
  });
}

async function memory(a) {
  const r = conn();
  await r.flushdb();
  const q = new Queue(QUEUE, { connection: conn() });
  await q.waitUntilReady();
  await q.add('warmup', {}, { removeOnComplete: true }); // the queue's own keys exist before the measure
  await q.drain();
  const before = await info(r, 'memory', 'used_memory');
  await addAll(q, a, {});
  const after = await info(r, 'memory', 'used_memory');
  await drain(a, { removeOnComplete: false });
  const ids = await r.zrevrange(`bull:${QUEUE}:completed`, 0, a.retained - 1);
  let bytes = 0;
  for (const id of ids) bytes += Number(await r.call('MEMORY', 'USAGE', `bull:${QUEUE}:${id}`, 'SAMPLES', '0'));
  const zcard = await r.zcard(`bull:${QUEUE}:completed`);
  const zbytes = Number(await r.call('MEMORY', 'USAGE', `bull:${QUEUE}:completed`, 'SAMPLES', '0'));
  const failed = await failedJobBytes(a, r);
  await q.close();
  await r.quit();
  console.log(JSON.stringify({
    system: 'bullmq', version, mode: 'memory', n: a.n, payload: a.payload,
    bytes_per_waiting_job: +((after - before) / a.n).toFixed(1),
    bytes_per_completed_job: +(bytes / ids.length + zbytes / zcard).toFixed(1),
    completed_sampled: ids.length,
    ...failed,
  }));
}

// The same failure as tq's memory run (bench/tq_bench.py, DEAD_N): a refused amount, two calls deep.
function checkAmount(n) {
  if (n >= 0) throw new Error(`record ${n} refused: the amount must be negative for a refund`);
}
function refund(data) { checkAmount(data.n); }

async function failedJobBytes(a, r) {
  const name = `${QUEUE}-failed`, n = a.retained;
  const q = new Queue(name, { connection: conn() });
  await q.waitUntilReady();
  const jobs = [];
  for (let i = 0; i < n; i++) jobs.push({ name: 'noop', data: payload(a, i), opts: { attempts: 1, removeOnFail: false } });
  await q.addBulk(jobs);
  await new Promise((resolve, reject) => {
    let failed = 0;
    const w = new Worker(name, async (job) => refund(job.data), { connection: conn(), concurrency: a.concurrency });
    w.on('failed', () => { if (++failed === n) w.close().then(resolve, reject); });
    w.on('error', reject);
  });
  const ids = await r.zrevrange(`bull:${name}:failed`, 0, -1);
  let bytes = 0;
  for (const id of ids) bytes += Number(await r.call('MEMORY', 'USAGE', `bull:${name}:${id}`, 'SAMPLES', '0'));
  const zbytes = Number(await r.call('MEMORY', 'USAGE', `bull:${name}:failed`, 'SAMPLES', '0'));
  await q.close();
  return { bytes_per_failed_job: +((bytes + zbytes) / ids.length).toFixed(1), failed_sampled: ids.length };
}

async function cpu(a) {
  const r = conn();
  await r.flushdb();
  const q = new Queue(QUEUE, { connection: conn() });
  await q.waitUntilReady();
  const before = await cpuSeconds(r);
  await addAll(q, a, { removeOnComplete: true });
  await drain(a, {});
  const after = await cpuSeconds(r);
  await q.close();
  await r.quit();
  console.log(JSON.stringify({
    system: 'bullmq', version, mode: 'cpu', n: a.n, concurrency: a.concurrency,
    redis_cpu_us_per_job: +(((after - before) * 1e6) / a.n).toFixed(2),
  }));
}

async function concurrent(a) {
  const r = conn();
  await r.flushdb();
  const q = new Queue(QUEUE, { connection: conn() });
  await q.waitUntilReady();
  let left = a.n;
  const caller = async () => {
    while (left > 0) {
      left -= 1;
      await q.add('noop', { t0: Date.now() / 1000 }, { removeOnComplete: true });
    }
  };
  const t = process.hrtime.bigint();
  await Promise.all(Array.from({ length: a.concurrency }, caller));
  const s = Number(process.hrtime.bigint() - t) / 1e9;
  await q.close();
  await r.quit();
  console.log(JSON.stringify({
    system: 'bullmq', version, mode: 'concurrent', n: a.n, concurrency: a.concurrency,
    enqueue_api: `Queue.add, ${a.concurrency} async callers, one job at a time each`,
    enqueue_s: +s.toFixed(4), enqueue_rate: +(a.n / s).toFixed(1),
  }));
}

const epochS = () => (performance.timeOrigin + performance.now()) / 1000; // as bench.js: sub-ms
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function pct(sorted, p) { // bench.js's percentile
  const k = Math.min(sorted.length - 1, Math.max(0, Math.round((p / 100) * sorted.length + 0.5) - 1));
  return sorted[k];
}

// The peer harness's worker process: ready on PEERBENCH_READY, writes its rows to `out` and exits
// once it has completed n jobs.
function harnessWorker(a, out) {
  const p = spawn(process.execPath, [a.harness, 'worker', '--n', String(a.n), '--concurrency', String(a.concurrency),
    '--out', out], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = new Promise((resolve, reject) => {
    let buf = '';
    p.stdout.on('data', (d) => { buf += d; if (buf.includes('PEERBENCH_READY')) resolve(); });
    p.on('exit', () => reject(new Error('worker exited')));
  });
  const done = new Promise((resolve) => p.on('exit', (code) => resolve(code)));
  const killer = setTimeout(() => p.kill('SIGKILL'), a.timeout * 1000);
  done.then(() => clearTimeout(killer));
  return { ready, done };
}

async function latencyOpen(a) {
  if (!a.harness) throw new Error('--harness <peers-bench/bullmq/bench.js> is required');
  const r = conn();
  await r.flushdb();
  await r.quit();
  const out = path.join(os.tmpdir(), `bullmq_extra_${process.pid}_${Date.now()}.json`);
  const w = harnessWorker(a, out);
  await w.ready;
  await sleep(1000); // as bench.js latency: let the worker settle into its idle loop
  const q = new Queue(QUEUE, { connection: conn() });
  await q.waitUntilReady();
  const calls = [];
  const tb = performance.now();
  for (let i = 0; i < a.n; i++) {
    const d = tb + (i * 1000) / a.rate - performance.now();
    if (d > 0) await sleep(d);
    calls.push(q.add('noop', { t0: epochS() }, { removeOnComplete: true }));
  }
  await Promise.all(calls);
  const prodS = (performance.now() - tb) / 1000;
  const code = await w.done;
  await q.close();
  const res = { system: 'bullmq', version, mode: 'latency', n: a.n, rate: a.rate, achieved_rate: +(a.n / prodS).toFixed(1),
    concurrency: a.concurrency, variant: 'open', worker: `bullmq Worker concurrency=${a.concurrency}`,
    enqueue_api: 'Queue.add, each job started at its time without waiting for the previous one (open loop)' };
  if (!fs.existsSync(out)) { res.error = `worker did not finish (rc=${code})`; console.log(JSON.stringify(res)); return; }
  const d = JSON.parse(fs.readFileSync(out));
  fs.unlinkSync(out);
  const st = d.rows.map((x) => (x[1] - x[0]) * 1000).sort((x, y) => x - y);
  const dn = d.rows.map((x) => (x[2] - x[0]) * 1000).sort((x, y) => x - y);
  Object.assign(res, {
    lat_done_p50_ms: +pct(dn, 50).toFixed(3), lat_done_p99_ms: +pct(dn, 99).toFixed(3),
    lat_done_max_ms: +dn[dn.length - 1].toFixed(3),
    lat_start_p50_ms: +pct(st, 50).toFixed(3), lat_start_p99_ms: +pct(st, 99).toFixed(3),
  });
  console.log(JSON.stringify(res));
}

const a = parseArgs(process.argv.slice(2));
const fn = { memory, cpu, concurrent, 'latency-open': latencyOpen }[a.mode];
if (!fn) { console.error('mode must be memory|cpu|concurrent|latency-open'); process.exit(2); }
fn(a).then(() => process.exit(0)).catch((e) => { console.error(e); process.exit(1); });
