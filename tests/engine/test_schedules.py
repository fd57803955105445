"""Recurring schedules (tq.schedules): the model, firing by an injected clock (a jump forward runs
once, a jump back repeats nothing), Forbid, suspend, exactly-once, and failover between three
scheduler processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from support import fast_settings, helper_command, helper_env, scheduler_proc, wait_for
from tq import keys, schedules
from tq.envelope import entry_envelope
from tq.errors import InvalidPayload, UnknownJob, UnknownQueue
from tq.registry import unregister_queue
from tq.schedules import ConcurrencyPolicy, Scheduler, ScheduleSpec

Q = scheduler_proc.QUEUE
T0 = 1_800_000_000.0  # a multiple of 60: 2027-01-15T08:00:00Z


@pytest.fixture
def registered() -> Iterator[None]:
    scheduler_proc.register()
    yield
    unregister_queue(Q)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Seen:
    def __init__(self) -> None:
        self.ticks: list[tuple[str, str, str, int]] = []

    def schedule_ticks(self, schedule: str, queue: str, outcome: str, count: int) -> None:
        self.ticks.append((schedule, queue, outcome, count))


def spec(**kw: Any) -> ScheduleSpec:
    base: dict[str, Any] = {"name": "every-minute", "queue": Q, "job": "ping", "intervalSeconds": 60}
    base.update(kw)
    return ScheduleSpec.model_validate(base)


async def jobs_of(client: Any) -> list[dict[str, Any]]:
    entries = await client.xrange(keys.stream(Q))
    return [entry_envelope(f, Q, int(e.split(b"-")[0])).model_dump() for e, f in entries]


# ---- the model ------------------------------------------------------------------------------------
def test_spec_needs_exactly_one_of_cron_and_interval() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        ScheduleSpec(name="x", queue=Q, job="ping")
    with pytest.raises(ValueError, match="exactly one"):
        ScheduleSpec.model_validate(
            {"name": "x", "queue": Q, "job": "ping", "cron": "* * * * *", "intervalSeconds": 5}
        )
    with pytest.raises(ValueError, match="invalid cron"):
        ScheduleSpec(name="x", queue=Q, job="ping", cron="61 * * * *")
    with pytest.raises(ValueError, match="time zone"):
        ScheduleSpec(name="x", queue=Q, job="ping", cron="0 2 * * *", time_zone="Mars/Olympus")
    with pytest.raises(ValueError):
        ScheduleSpec(name="Bad Name", queue=Q, job="ping", cron="0 2 * * *")


def test_cron_ticks_follow_the_time_zone() -> None:
    s = ScheduleSpec(name="nightly", queue=Q, job="ping", cron="0 2 * * *", time_zone="Europe/Berlin")
    now = T0  # 09:00 in Berlin
    assert s.latest_tick(now) == T0 - 7 * 3600  # 02:00 Berlin = 01:00 UTC
    assert s.next_tick(now) == T0 + 17 * 3600
    assert s.ticks_between(T0 - 10 * 86400, T0) == 10
    assert s.latest_tick(T0 - 7 * 3600) == T0 - 7 * 3600  # a tick is its own latest


def test_payload_template_gives_the_ticks_day() -> None:
    s = spec(payload={"day": "$yesterday", "n": 3}, time_zone="Asia/Tokyo")
    assert s.render_payload(T0) == {"day": "2027-01-14", "n": 3}  # 17:00 in Tokyo
    assert spec(payload={"day": "$$yesterday"}).render_payload(T0) == {"day": "$yesterday"}


async def test_add_validates_against_the_registry_and_writes_nothing_when_invalid(
    redis_client: Any, registered: None
) -> None:
    with pytest.raises(InvalidPayload, match="n"):
        await schedules.add(redis_client, spec(payload={"n": "many"}))
    with pytest.raises(UnknownJob):
        await schedules.add(redis_client, spec(job="pong"))
    with pytest.raises(UnknownQueue):
        await schedules.add(redis_client, spec(queue="nope"))
    assert not await redis_client.exists(keys.SCHEDULES, keys.schedule_state("every-minute"))
    # a real family job: rollup-daily's day comes from the template
    rollup = ScheduleSpec(
        name="rollup",
        queue="analytics:process",
        job="rollup-daily",
        cron="5 0 * * *",
        payload={"day": "$yesterday"},
    )
    await schedules.add(redis_client, rollup, now=T0)
    [(stored, state)] = await schedules.list_with_state(redis_client)
    assert stored == rollup and state["created"] == T0 and state["next"] == T0 + 16 * 3600 + 300


# ---- firing ---------------------------------------------------------------------------------------
async def test_clock_jumps_forward_run_once_and_back_repeat_nothing(
    redis_client: Any, registered: None
) -> None:
    clock, seen = Clock(T0 + 10), Seen()
    await schedules.add(redis_client, spec(payload={"day": "$today"}), now=clock.now)
    sched = Scheduler(redis_client, fast_settings(""), clock=clock, observer=seen)
    assert await sched.tick()  # the only one: leader
    assert await redis_client.xlen(keys.stream(Q)) == 0  # first tick at T0+60
    clock.now = T0 + 61
    await sched.tick()
    await sched.tick()
    [job] = await jobs_of(redis_client)
    assert job["idempotency_key"] == f"schedule:every-minute:{int(T0 + 60)}"
    assert job["payload"] == {"n": 0, "day": "2027-01-15"}
    clock.now = T0 + 60 + 600 + 30  # ten minutes later: nine ticks missed, the latest runs
    await sched.tick()
    jobs = await jobs_of(redis_client)
    assert len(jobs) == 2 and jobs[1]["idempotency_key"].endswith(str(int(T0 + 660)))
    state = schedules.parse_state(await redis_client.hgetall(keys.schedule_state("every-minute")))
    assert (state["fired"], state["missed"], state["last"]) == (2, 9, T0 + 660)
    assert seen.ticks == [
        ("every-minute", Q, "fired", 1),
        ("every-minute", Q, "fired", 1),
        ("every-minute", Q, "missed", 9),
    ]
    clock.now = T0 + 30  # back before everything: nothing repeats
    await sched.tick()
    clock.now = T0 + 665
    await sched.tick()
    assert await redis_client.xlen(keys.stream(Q)) == 2
    clock.now = T0 + 721  # and the clock moves on
    await sched.tick()
    assert await redis_client.xlen(keys.stream(Q)) == 3


async def test_a_tick_past_its_starting_deadline_is_missed_not_run(
    redis_client: Any, registered: None
) -> None:
    clock = Clock(T0)
    await schedules.add(redis_client, spec(startingDeadlineSeconds=20), now=clock.now)
    sched = Scheduler(redis_client, fast_settings(""), clock=clock)
    clock.now = T0 + 60 * 5 + 30  # 30 s late for the latest tick: past the deadline
    await sched.tick()
    assert await redis_client.xlen(keys.stream(Q)) == 0
    state = schedules.parse_state(await redis_client.hgetall(keys.schedule_state("every-minute")))
    assert (state["fired"], state["missed"], state["next"]) == (0, 5, T0 + 360)
    clock.now = T0 + 360 + 5  # within the deadline
    await sched.tick()
    assert await redis_client.xlen(keys.stream(Q)) == 1


async def test_forbid_skips_while_the_previous_job_is_unfinished(redis_client: Any, registered: None) -> None:
    clock = Clock(T0)
    await schedules.add(redis_client, spec(concurrencyPolicy=ConcurrencyPolicy.FORBID), now=clock.now)
    sched = Scheduler(redis_client, fast_settings(""), clock=clock)
    clock.now = T0 + 61
    await sched.tick()
    clock.now = T0 + 121  # nobody ran the first job: skipped
    await sched.tick()
    assert await redis_client.xlen(keys.stream(Q)) == 1
    state = schedules.parse_state(await redis_client.hgetall(keys.schedule_state("every-minute")))
    assert (state["fired"], state["skipped"], state["outcome"]) == (1, 1, "waiting")
    await redis_client.hset(keys.job(Q, state["job"]), "s", "completed")  # it finished
    clock.now = T0 + 181
    await sched.tick()
    assert await redis_client.xlen(keys.stream(Q)) == 2


async def test_replace_cancels_the_unfinished_previous_job(redis_client: Any, registered: None) -> None:
    clock = Clock(T0)
    await schedules.add(redis_client, spec(concurrencyPolicy=ConcurrencyPolicy.REPLACE), now=clock.now)
    sched = Scheduler(redis_client, fast_settings(""), clock=clock)
    clock.now = T0 + 61
    await sched.tick()
    first = schedules.parse_state(await redis_client.hgetall(keys.schedule_state("every-minute")))["job"]
    clock.now = T0 + 121  # nobody ran the first job: it is cancelled (removed, never runs), the tick runs
    await sched.tick()
    state = schedules.parse_state(await redis_client.hgetall(keys.schedule_state("every-minute")))
    assert (state["fired"], state["skipped"], state["outcome"]) == (2, 0, "waiting")
    assert state["job"] != first and await redis_client.xlen(keys.stream(Q)) == 1
    assert not await redis_client.exists(keys.job(Q, first))
    assert int(await redis_client.hget(keys.counters(Q), "cancelled")) == 1
    await redis_client.hset(keys.job(Q, state["job"]), "s", "completed")  # a finished job is left alone
    clock.now = T0 + 181
    await sched.tick()
    assert await redis_client.xlen(keys.stream(Q)) == 2
    assert int(await redis_client.hget(keys.counters(Q), "cancelled")) == 1


async def test_suspended_ticks_pass_silently(redis_client: Any, registered: None) -> None:
    clock = Clock(T0)
    await schedules.add(redis_client, spec(), now=clock.now)
    await schedules.set_suspended(redis_client, "every-minute", True)
    sched = Scheduler(redis_client, fast_settings(""), clock=clock)
    clock.now = T0 + 300
    await sched.tick()
    await schedules.set_suspended(redis_client, "every-minute", False)
    await sched.tick()  # resuming does not run what fell during the suspension
    assert await redis_client.xlen(keys.stream(Q)) == 0
    clock.now = T0 + 361
    await sched.tick()
    assert await redis_client.xlen(keys.stream(Q)) == 1
    job_id = await schedules.run_now(redis_client, "every-minute")
    assert await redis_client.xlen(keys.stream(Q)) == 2
    assert (await redis_client.hget(keys.schedule_state("every-minute"), "job")).decode() == job_id


async def test_a_tick_that_listed_a_removed_schedule_writes_no_state_back(
    redis_client: Any, registered: None
) -> None:
    """A schedule removed while a tick evaluates it (the tick listed it just before): the tick's
    writes find no state hash and recreate none, so nothing of the schedule is left in Redis."""
    clock = Clock(T0)
    await schedules.add(redis_client, spec(), now=clock.now)
    sched = Scheduler(redis_client, fast_settings(""), clock=clock)
    clock.now = T0 + 61
    listed = await schedules.list_with_state(redis_client)
    assert [s.name for s, _ in listed] == ["every-minute"]
    assert await schedules.remove(redis_client, "every-minute")
    for s, state in listed:  # the rest of that tick, after the removal
        await sched._evaluate(s, state, clock.now)
    assert await redis_client.hget(keys.SCHEDULES, "every-minute") is None
    assert not await redis_client.exists(keys.schedule_state("every-minute"))


async def test_only_the_leader_fires_and_a_refired_tick_is_the_same_job(
    redis_client: Any, registered: None
) -> None:
    clock = Clock(T0)
    await schedules.add(redis_client, spec(), now=clock.now)
    a = Scheduler(redis_client, fast_settings(""), clock=clock, token="a")
    b = Scheduler(redis_client, fast_settings(""), clock=clock, token="b")
    clock.now = T0 + 61
    assert await a.tick() and not await b.tick()
    # a leader that died between the enqueue and moving the last tick on: the next one re-fires it
    await redis_client.hdel(keys.schedule_state("every-minute"), "last")
    await a.release()
    assert await b.tick()
    assert await redis_client.xlen(keys.stream(Q)) == 1  # the same job: the idempotency key held
    assert int(await redis_client.hget(keys.counters(Q), "enqueued")) == 1


# ---- three scheduler processes ---------------------------------------------------------------------
def _spawn(url: str, module: str = "scheduler_proc") -> subprocess.Popen[str]:
    """A helper process: a scheduler (lock TTL 1 s), or ``app_worker``."""
    return subprocess.Popen(
        helper_command(module, url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=helper_env(),
    )


def _leader(client: redis.Redis, procs: list[subprocess.Popen[str]]) -> subprocess.Popen[str]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        token = client.get(keys.SCHEDULER_LEADER)
        for p in procs:
            if token and f":{p.pid}:" in token.decode() and p.poll() is None:
                return p
        time.sleep(0.05)
    raise AssertionError("no live leader")


@pytest.mark.serial
async def test_sigkill_of_the_leader_another_fires_every_tick_once(
    redis_url: str, redis_client: Any, registered: None
) -> None:
    # a tick every 2 s, a lock of 1 s: a takeover comes before the next tick is due
    await schedules.add(redis_client, spec(intervalSeconds=2, startingDeadlineSeconds=5))
    client = redis.Redis.from_url(redis_url)
    procs = [_spawn(redis_url) for _ in range(3)]
    started = time.time()
    try:
        for _ in range(2):
            await wait_for(lambda: client.xlen(keys.stream(Q)) >= 2, 15, what="ticks fired")
            leader = _leader(client, procs)
            os.kill(leader.pid, signal.SIGKILL)
            leader.wait(5)
            client.delete(keys.stream(Q))  # count afresh what the next leader fires
            await wait_for(lambda: client.xlen(keys.stream(Q)) >= 1, 10, what="a new leader's tick")
            assert _leader(client, procs) is not leader
        await wait_for(lambda: client.xlen(keys.stream(Q)) >= 2, 10, what="ticks after the failovers")
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(10)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    ended = time.time()
    ids = client.keys(keys.idempotency(Q, "schedule:every-minute:*"))
    ticks = sorted(int(k.decode().rsplit(":", 1)[1]) for k in ids)
    assert ticks, "nothing fired"
    # every tick from the first to the last exactly once: no gap (none lost), no second job for one
    assert ticks == list(range(ticks[0], ticks[-1] + 1, 2)), ticks
    assert started - 2 <= ticks[0] and ticks[-1] <= ended
    assert int(client.hget(keys.counters(Q), "enqueued")) == len(ticks)
    state = schedules.parse_state(client.hgetall(keys.schedule_state("every-minute")))
    assert state["fired"] == len(ticks) and state["missed"] == 0
    client.close()


# ---- hosted by WorkerApp ----------------------------------------------------------------------------
async def test_a_worker_app_fires_schedules_and_its_jobs_complete(redis_url: str, redis_client: Any) -> None:
    from support import app_worker

    app_worker.register()
    try:
        await schedules.add(
            redis_client,
            ScheduleSpec(
                name="tick", queue=app_worker.QUEUE, job="sleep", payload={"seconds": 0}, interval_seconds=1
            ),
        )
        proc = _spawn(redis_url, "app_worker")
        try:

            async def completed_twice() -> bool:
                state = schedules.parse_state(await redis_client.hgetall(keys.schedule_state("tick")))
                done = int(await redis_client.hget(keys.counters(app_worker.QUEUE), "completed") or 0)
                return state["fired"] >= 2 and done >= 2

            await wait_for(completed_twice, 20, what="two ticks fired and completed")
            assert await redis_client.get(keys.SCHEDULER_LEADER)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
        assert not await redis_client.exists(keys.SCHEDULER_LEADER)  # released on a clean stop
        [(_, state)] = await schedules.list_with_state(redis_client)
        assert state["outcome"] in ("completed", "waiting")  # the last job's, as last observed
    finally:
        unregister_queue(app_worker.QUEUE)


# ---- ownership: managed schedules ------------------------------------------------------------------
async def test_an_owner_claims_once_and_others_are_refused(redis_client: Any, registered: None) -> None:
    await schedules.add(redis_client, spec(), now=T0)  # unmanaged (the CLI's)
    await redis_client.hset(keys.schedule_state("every-minute"), "last", repr(T0 + 60))
    a, b = "JobSchedule dev/every-minute", "JobSchedule staging/every-minute"
    results = await asyncio.gather(
        schedules.add(redis_client, spec(payload={"n": 1}), owner=a, generation=1, now=T0),
        schedules.add(redis_client, spec(payload={"n": 2}), owner=b, generation=1, now=T0),
        return_exceptions=True,
    )
    refused = [r for r in results if isinstance(r, schedules.ManagedSchedule)]
    assert len(refused) == 1 and results.count(None) == 1  # one owner, even racing
    winner = await schedules.owner_of(redis_client, "every-minute")
    state = schedules.parse_state(await redis_client.hgetall(keys.schedule_state("every-minute")))
    assert (state["last"], state["generation"]) == (T0 + 60, 1)  # adopted with its state
    assert (await schedules.get(redis_client, "every-minute")).payload == {"n": 1 if winner == a else 2}
    with pytest.raises(schedules.ManagedSchedule, match="managed by JobSchedule"):
        await schedules.add(redis_client, spec(), now=T0)  # the CLI
    with pytest.raises(schedules.ManagedSchedule):
        await schedules.remove(redis_client, "every-minute")
    loser = b if winner == a else a
    with pytest.raises(schedules.ManagedSchedule):
        await schedules.remove(redis_client, "every-minute", owner=loser)
    installed, managed = await schedules.install_defaults(
        redis_client, [spec(), spec(name="other", intervalSeconds=30)]
    )
    assert (installed, managed) == (["other"], ["every-minute"])
    assert await schedules.remove(redis_client, "every-minute", owner=winner)
    assert not await redis_client.exists(keys.schedule_state("every-minute"))
    await schedules.add(redis_client, spec(name="third"), owner=a, now=T0)
    assert await schedules.remove(redis_client, "third", force=True)
