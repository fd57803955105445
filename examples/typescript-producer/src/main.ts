// Enqueue tq jobs from the command line, one JSON line per job on stdout: {"id": ..., "duplicate": ...}
//
//   node dist/main.js QUEUE JOB PAYLOAD_JSON [PAYLOAD_JSON ...]
//       [--redis URL] [--script PATH] [--idempotency-key KEY] [--delay-ms MS] [--trace-id ID]
//       [--id ID ...] [--idempotency-ttl-s S]
//
// Several payloads go in one script call (one round trip). --idempotency-key applies to a single job.
// --id resends jobs with the ids a previous call chose (after a lost reply): nothing is written twice.

import { resolve } from "node:path";
import { parseArgs } from "node:util";
import Redis from "ioredis";
import { TqProducer, type JobRequest } from "./wire";

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    allowPositionals: true,
    options: {
      redis: { type: "string", default: process.env.TQ_REDIS_URL ?? "redis://localhost:6379/0" },
      script: { type: "string", default: resolve(__dirname, "../../../shared/tq/scripts/enqueue.lua") },
      "idempotency-key": { type: "string" },
      "delay-ms": { type: "string" },
      "trace-id": { type: "string" },
      "idempotency-ttl-s": { type: "string" },
      id: { type: "string", multiple: true },
    },
  });
  const [queue, name, ...payloads] = positionals;
  if (!queue || !name || payloads.length === 0) {
    throw new Error("usage: main.js QUEUE JOB PAYLOAD_JSON [PAYLOAD_JSON ...] [options]");
  }
  if (values["idempotency-key"] !== undefined && payloads.length > 1) {
    throw new Error("--idempotency-key names one job: give one payload");
  }
  const jobs: JobRequest[] = payloads.map((raw) => ({
    name,
    payload: JSON.parse(raw) as Record<string, unknown>,
    idempotencyKey: values["idempotency-key"],
    traceId: values["trace-id"],
    delayMs: values["delay-ms"] === undefined ? undefined : Number(values["delay-ms"]),
  }));
  const redis = new Redis(values.redis as string, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await redis.connect();
    const producer = new TqProducer(redis, {
      scriptPath: values.script as string,
      idempotencyTtlS: values["idempotency-ttl-s"] === undefined ? undefined : Number(values["idempotency-ttl-s"]),
    });
    const results = await producer.enqueue(queue, jobs, values.id);
    for (const r of results) process.stdout.write(JSON.stringify(r) + "\n");
  } finally {
    redis.disconnect();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
