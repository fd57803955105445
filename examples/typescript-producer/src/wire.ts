// tq wire format 1 (docs/wire-format.md): enqueue tq jobs through the engine's own enqueue script.
// Nothing here validates a payload against its job's model: the worker does, and dead-letters an
// invalid job with the reason (or use the admin service's POST /api/jobs, which answers 422 at once).

import { createHash, randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import type Redis from "ioredis";

export const WIRE_FORMAT_VERSION = 1;
// SHA-1 of shared/tq/scripts/enqueue.lua for this version (also the EVALSHA name): a script that
// differs is another contract, refused rather than run with arguments it may not mean.
export const ENQUEUE_SCRIPT_SHA1 = "d9ca4c63839f6bb907c91d3e3095463062046b96";
export const DEFAULT_IDEMPOTENCY_TTL_S = 86400; // used only when the queue's config hash sets none

const UNIT_SEPARATOR = "\x1f"; // joins one job's six fields into one script argument
const PRINTABLE_1_256 = /^[^\x00-\x1f\x7f]{1,256}$/u;

export interface JobRequest {
  name: string;
  payload: Record<string, unknown>;
  idempotencyKey?: string;
  traceId?: string; // optional trace context (W3C traceparent or a plain id)
  delayMs?: number;
}

export interface EnqueueResult {
  id: string;
  duplicate: boolean; // the idempotency key was held: id is the job that holds it
}

/** 128 random bits as 22 characters: base64 with '_' for '+' and '.' for '/', no padding. */
export function newJobId(): string {
  return randomBytes(16).toString("base64").slice(0, 22).replace(/\+/g, "_").replace(/\//g, ".");
}

/** The queue's keys share the hash tag {queue}: one slot, so the script also runs on a Cluster. */
export function queuePrefix(queue: string): string {
  return `tq:{${queue}}:`;
}

export function loadEnqueueScript(path: string): string {
  const lua = readFileSync(path, "utf8");
  const sha1 = createHash("sha1").update(lua).digest("hex");
  if (sha1 !== ENQUEUE_SCRIPT_SHA1) {
    throw new Error(
      `${path} has SHA-1 ${sha1}, not ${ENQUEUE_SCRIPT_SHA1} (tq wire format ${WIRE_FORMAT_VERSION}): ` +
        "the engine's wire format changed, read docs/wire-format.md",
    );
  }
  return lua;
}

/** One job's script argument: id, name, idempotency key, trace id, due (ms) and payload JSON. */
export function jobArgument(job: JobRequest, id: string, nowMs: number): string {
  // The contract's own limits on the separator-joined fields (the payload's JSON never holds a raw
  // \x1f: JSON.stringify escapes control characters).
  if (!job.name || job.name.length > 200 || job.name.includes(UNIT_SEPARATOR)) {
    throw new Error("job name must be 1-200 characters without \\x1f");
  }
  for (const [label, value] of [
    ["idempotencyKey", job.idempotencyKey],
    ["traceId", job.traceId],
  ] as const) {
    if (value !== undefined && !PRINTABLE_1_256.test(value)) {
      throw new Error(`${label} must be 1-256 printable characters`);
    }
  }
  if (typeof job.payload !== "object" || job.payload === null || Array.isArray(job.payload)) {
    throw new Error("payload must be a JSON object");
  }
  const delay = job.delayMs ?? 0;
  if (!(delay >= 0)) throw new Error("delayMs must not be negative");
  const due = delay > 0 ? Math.floor(nowMs + delay) : 0;
  return [id, job.name, job.idempotencyKey ?? "", job.traceId ?? "", String(due), JSON.stringify(job.payload)].join(
    UNIT_SEPARATOR,
  );
}

export interface ProducerOptions {
  scriptPath: string;
  idempotencyTtlS?: number;
  publishEvents?: boolean;
}

type EnqueueCommand = (...args: (string | number)[]) => Promise<string[]>;

export class TqProducer {
  private readonly enqueueCommand: EnqueueCommand;

  constructor(
    private readonly redis: Redis,
    private readonly options: ProducerOptions,
  ) {
    // defineCommand sends EVALSHA and falls back to EVAL (which loads the script) on NOSCRIPT
    redis.defineCommand("tqEnqueue", { numberOfKeys: 4, lua: loadEnqueueScript(options.scriptPath) });
    this.enqueueCommand = (redis as unknown as { tqEnqueue: EnqueueCommand }).tqEnqueue.bind(redis);
  }

  /** Enqueue jobs onto one queue in one round trip. Ids are chosen before sending: resending the
   * same ids after a lost reply (pass them back in) finds the jobs instead of adding copies. */
  async enqueue(queue: string, jobs: JobRequest[], ids: string[] = jobs.map(() => newJobId())): Promise<EnqueueResult[]> {
    const prefix = queuePrefix(queue);
    const nowMs = Date.now();
    const keys = [prefix + "stream", prefix + "delayed", prefix + "counters", prefix + "config"];
    const args: (string | number)[] = [
      prefix,
      nowMs,
      queue,
      this.options.idempotencyTtlS ?? DEFAULT_IDEMPOTENCY_TTL_S,
      this.options.publishEvents === false ? 0 : 1,
      ...jobs.map((job, i) => jobArgument(job, ids[i], nowMs)),
    ];
    const reply = await this.enqueueCommand(...keys, ...args);
    return reply.map((v) => (v.startsWith("dup:") ? { id: v.slice(4), duplicate: true } : { id: v, duplicate: false }));
  }
}
