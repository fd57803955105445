"""Bad input everywhere, in volume: random payloads at enqueue for every job of the registry, and
a flood of forged, malformed, huge and non-UTF-8 stream entries at consume. Nothing crashes a
consumer; every bad enqueue is a clear ``TqError`` with nothing written; every bad entry ends in
the DLQ with a reason; good jobs keep flowing."""

from __future__ import annotations

import json
import random
import string
import time
from typing import Any

from support import fast_settings, running, wait_for
from tq import dlq, keys
from tq.errors import TqError
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import Producer
from tq.registry import all_queues

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}
SEED = 20261130


def _junk(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 2**63, 3.5, float(rng.randrange(10**6))])
    if kind == 3:
        return "".join(rng.choice(string.printable) for _ in range(rng.randrange(0, 40)))
    if kind == 4:
        return rng.choice(["", " ", "\x00", "a@b", "x" * 5000, "\u202e\u0645", "😀"])
    if kind == 5:
        return rng.choice(["2026-11-30", "not-a-date", "https://example.com", "../../etc/passwd"])
    if kind == 6:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {rng.choice(["id", "to", "x", "", "article_id", "n"]): _junk(rng, depth + 1) for _ in range(3)}


async def test_random_payloads_at_enqueue_are_refused_clearly_and_write_nothing(
    redis_client: Any, redis_url: str
) -> None:
    rng = random.Random(SEED)
    producer = Producer(redis_client, fast_settings(redis_url))
    refused = accepted = 0
    for spec in all_queues():
        for job, model in spec.jobs.items():
            fields = list(model.model_fields)
            for _ in range(40):
                data = {f: _junk(rng) for f in fields if rng.random() < 0.7}
                if rng.random() < 0.3:
                    data[rng.choice(["extra", "__proto__", "payload"])] = _junk(rng)
                before = await redis_client.xlen(keys.stream(spec.name))
                try:
                    await producer.enqueue(spec.name, job, data)
                except TqError as exc:
                    refused += 1
                    assert str(exc), "an error without a reason"
                    assert await redis_client.xlen(keys.stream(spec.name)) == before, (
                        "a refused job was written"
                    )
                else:
                    accepted += 1
                    assert await redis_client.xlen(keys.stream(spec.name)) == before + 1
    assert refused > accepted, (refused, accepted)  # junk is mostly refused; what passes was valid
    # the edges a fuzzer rarely hits by chance
    for bad in (
        {"to": "a@example.com", "template": "w\ud800"},  # a lone surrogate: not encodable as UTF-8
        {
            "to": "a@example.com",
            "template": "w",
            "variables": {"blob": "x" * 2_000_000},
        },  # over the size limit
    ):
        try:
            await producer.enqueue(Q, "send-email", bad)
        except TqError as exc:
            assert str(exc)
        else:
            raise AssertionError(f"accepted {str(bad)[:60]}")


def _forged(rng: random.Random, i: int) -> dict[str | bytes, Any]:
    good = {
        "id": f"forged-{i}",
        "queue": Q,
        "name": "send-email",
        "payload": EMAIL,
        "attempt": 1,
        "enqueued_at": time.time(),
    }
    kind = i % 8
    if kind == 0:  # random bytes, often invalid UTF-8
        return {"j": bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))}
    if kind == 1:  # a mutated envelope: one field replaced by junk
        field = rng.choice(list(good))
        return {"j": json.dumps({**good, field: _junk(rng)}, default=str)}
    if kind == 2:  # a valid envelope with a junk payload
        return {"j": json.dumps({**good, "payload": _junk(rng)}, default=str)}
    if kind == 3:  # truncated JSON
        text = json.dumps(good)
        return {"j": text[: rng.randrange(1, len(text) - 1)]}
    if kind == 4:  # unknown job names, including quotes and control characters
        return {"j": json.dumps({**good, "name": rng.choice(["send-fax", 'a"b', "\n", "x" * 300])})}
    if kind == 5:  # no envelope field, or extra fields only
        return {rng.choice(["x", "jj", "J"]): json.dumps(_junk(rng), default=str)}
    if kind == 6:  # deeply nested JSON
        return {"j": "[" * 5000 + "]" * 5000}
    return {"j": "x" * 1_200_000}  # bigger than any payload the producer accepts


async def test_a_flood_of_forged_entries_is_dead_lettered_and_the_consumer_lives(
    redis_client: Any, redis_url: str
) -> None:
    rng = random.Random(SEED)
    n = 400
    settings = fast_settings(redis_url)
    h = HandlerRegistry()
    ran: list[str] = []

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> None:
        ran.append(ctx.job_id)

    stream = keys.stream(Q)
    await redis_client.xgroup_create(stream, keys.GROUP, id="0", mkstream=True)
    for i in range(n):
        await redis_client.xadd(stream, _forged(rng, i))
    producer = Producer(redis_client, settings)
    async with running(redis_client, settings, h) as worker:
        first = await producer.enqueue(Q, "send-email", EMAIL)

        async def all_settled() -> bool:
            c = await redis_client.hgetall(keys.counters(Q))
            return int(c.get(b"completed", 0)) + int(c.get(b"dead", 0)) >= n + 1

        await wait_for(all_settled, timeout=60, what="every forged entry to be settled")
        last = await producer.enqueue(Q, "send-email", EMAIL)  # still consuming after the flood
        await wait_for(lambda: last in ran, what="a good job after the flood")
        assert all(not t.done() for r in worker.runners.values() for t in (r.reader, r.settler) if t)
    counters = await redis_client.hgetall(keys.counters(Q))
    dead = int(counters[b"dead"])
    assert first in ran and last in ran
    assert int(counters.get(b"retried", 0)) == 0, "bad input is never retried"
    assert dead + len(ran) == n + 2
    assert (await redis_client.xpending(stream, keys.GROUP))["pending"] == 0
    letters = (await dlq.list_dead(redis_client, Q, limit=1000)).items
    assert len(letters) == dead
    assert all(d.error_type and d.error for d in letters), "a dead letter without a reason"
    big = [d for d in letters if "payloads are limited to" in d.error]
    assert len(big) == n // 8, "oversized entries are refused unread"
    print(f"\nchaos bad input: forged={n} dead_lettered={dead} ran={len(ran)} consumer_alive=True")
