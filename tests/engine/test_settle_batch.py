"""The settle script acks a batch with one XACK; an op whose entry was settled before (a second
settle, a duplicate in the batch) is skipped, the others settle, each exactly once; settled entries
leave the stream (trimmed or deleted) and no other entry does."""

from __future__ import annotations

import time
from typing import Any

from support import fast_settings
from tq import keys
from tq.envelope import JobState
from tq.jobs import get_job, list_jobs
from tq.producer import Producer
from tq.scripts import Scripts
from tq.worker import settle_keys

Q = "email:send"
EMAIL = {"to": "a@example.com", "template": "welcome"}


def _op(eid: bytes, fields: dict[bytes, bytes]) -> str:
    now = str(int(time.time() * 1000))
    parts = ["c", eid.decode(), fields[b"i"].decode(), "send-email", "1", now, "1.5", "", "", "", ""]
    return "\x1f".join([*parts, fields[b"t"].decode(), fields[b"p"].decode()])


async def _settle(client: Any, ops: list[str], mark: bytes = b"") -> int:
    args = [
        keys.prefix(Q),
        keys.GROUP,
        int(time.time() * 1000),
        Q,
        1000,
        1000,
        0,
        0,
        "c1",
        50_000,
        mark,
        *ops,
    ]
    return int(await Scripts(client).settle(keys=settle_keys(Q), args=args))


async def _waiting_in_a_group(client: Any, redis_url: str, n: int) -> str:
    """``n`` jobs enqueued on Q and its consumer group made: the stream's key."""
    p = Producer(client, fast_settings(redis_url))
    for _ in range(n):
        await p.enqueue(Q, "send-email", EMAIL)
    await client.xgroup_create(keys.stream(Q), keys.GROUP, id="0")
    return keys.stream(Q)


async def test_a_batch_settles_each_pending_entry_once(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    ids = [await p.enqueue(Q, "send-email", EMAIL) for _ in range(3)]
    await redis_client.xgroup_create(keys.stream(Q), keys.GROUP, id="0")
    [(_s, entries)] = await redis_client.xreadgroup(keys.GROUP, "c1", {keys.stream(Q): ">"}, count=3)
    a, b, c = (_op(eid, f) for eid, f in entries)
    assert await _settle(redis_client, [a, b]) == 2
    assert await _settle(redis_client, [b, c, c]) == 1  # b settled before, c listed twice
    assert await _settle(redis_client, [a]) == 0
    assert int(await redis_client.hget(keys.counters(Q), "completed")) == 3
    assert await redis_client.xlen(keys.stream(Q)) == 0
    for job_id in ids:
        rec = await redis_client.hgetall(keys.job(Q, job_id))
        assert rec[b"s"] == b"completed" and rec[b"x"] == b"" and rec[b"p"].startswith(b'{"to":')
    assert await redis_client.zcard(keys.completed_index(Q)) == 3
    # a completed record keeps no finish time (its index score) nor a first attempt's number
    rec = await get_job(redis_client, Q, ids[0])
    finished = await redis_client.zscore(keys.completed_index(Q), ids[0])
    assert rec.attempts == 1 and rec.finished_at == finished / 1000 and rec.payload["to"] == EMAIL["to"]
    listed = (await list_jobs(redis_client, Q, JobState.COMPLETED)).items
    scores = [await redis_client.zscore(keys.completed_index(Q), r.id) for r in listed]
    assert [r.finished_at for r in listed] == [score / 1000 for score in scores] and len(listed) == 3


async def test_settled_entries_leave_the_stream_and_no_other_does(redis_client: Any, redis_url: str) -> None:
    """Settled entries below the group's oldest pending one go in one trim, those settled ahead of
    it one by one; the pending entries (of any consumer) and the undelivered ones stay, and are
    delivered and settled later."""
    stream = await _waiting_in_a_group(redis_client, redis_url, 8)
    [(_s, mine)] = await redis_client.xreadgroup(keys.GROUP, "c1", {stream: ">"}, count=4)
    [(_s, theirs)] = await redis_client.xreadgroup(keys.GROUP, "c2", {stream: ">"}, count=1)
    every = [eid for eid, _f in await redis_client.xrange(stream)]
    ops = [_op(eid, f) for eid, f in mine]

    async def left() -> list[bytes]:
        return [eid for eid, _f in await redis_client.xrange(stream)]

    assert await _settle(redis_client, ops[:2]) == 2  # below every pending entry: trimmed
    assert await left() == every[2:]
    assert await _settle(redis_client, [ops[3]]) == 1  # ahead of the pending third: deleted alone
    assert await left() == [every[2], *every[4:]]
    assert await _settle(redis_client, [ops[2]]) == 1  # c2's entry (the fifth) is still pending
    assert await left() == every[4:]
    assert await _settle(redis_client, [_op(eid, f) for eid, f in theirs]) == 1
    assert await left() == every[5:]  # the three never delivered
    [(_s, rest)] = await redis_client.xreadgroup(keys.GROUP, "c1", {stream: ">"}, count=10)
    assert [eid for eid, _f in rest] == every[5:]
    assert await _settle(redis_client, [_op(eid, f) for eid, f in rest]) == 3
    assert await left() == [] and int(await redis_client.hget(keys.counters(Q), "completed")) == 8


async def test_a_settle_carries_the_progress_mark_and_never_moves_it_back(
    redis_client: Any, redis_url: str
) -> None:
    """The consumer's progress mark (``keys.progress``) rides on its settle call: stored when it
    is newer than the mark Redis has, so a settle retried after the writer wrote a newer one
    leaves that one (a mark moved back would let a started job go free after a crash)."""
    stream = await _waiting_in_a_group(redis_client, redis_url, 3)
    [(_s, entries)] = await redis_client.xreadgroup(keys.GROUP, "c1", {stream: ">"}, count=3)
    (first, f1), (second, f2), (third, _f3) = entries

    async def mark() -> bytes | None:
        return await redis_client.hget(keys.progress(Q), "c1")

    assert await _settle(redis_client, [_op(first, f1)], mark=second) == 1
    assert await mark() == second
    assert await _settle(redis_client, [], mark=first) == 0  # older: kept as it is
    assert await mark() == second
    assert await _settle(redis_client, [_op(second, f2)]) == 1  # none carried: unchanged
    assert await mark() == second
    await _settle(redis_client, [], mark=third)
    assert await mark() == third
