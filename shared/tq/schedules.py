"""Recurring schedules: a job enqueued on a cron expression or an interval, by one elected scheduler.

**Model** (``ScheduleSpec``; camelCase aliases, so a ``JobSchedule`` CRD can be generated from it as
``tq_operator.crd`` does for QueueConfig): ``name``, ``queue``, ``job``, ``payload`` (validated
against the job's model from the registry when added; string values ``$today``, ``$yesterday`` and
``$tick`` are filled in at each tick - the tick's date, the day before, the tick as ISO 8601, in the
schedule's time zone; ``$$`` escapes a literal ``$``), ``cron`` (five fields, croniter) or
``intervalSeconds`` (ticks at multiples of the interval since the epoch), ``timeZone`` (IANA name,
for cron), ``suspend``, ``concurrencyPolicy`` (``Allow``; ``Forbid``: a tick is skipped while the
schedule's previous job is unfinished) and ``startingDeadlineSeconds`` (how late a tick may still
run). The spec lives in ``tq:schedules`` (one hash), the observed state in
``tq:schedule:{name}:state`` (``STATE_FIELDS``).

**Ownership**: a schedule may be *managed* - written by the operator from a ``JobSchedule``
(``owner`` ``JobSchedule <namespace>/<name>``, kept in the state hash with the resource's
``generation``). ``add`` and ``remove`` refuse a schedule managed by another owner
(``ManagedSchedule``; ``remove(force=True)`` cleans up after a deleted operator), and
``install_defaults`` (the CLI's defaults, ``make dev``) leaves managed ones as they are, so the
in-process defaults never fight with the resources. Suspending and run-now stay open to every
caller: an operational switch, which the operator keeps until the resource's spec changes.

**Firing**: every worker process runs a ``Scheduler`` (``WorkerApp``, ``TQ_SCHEDULER_ENABLED``); the
holder of the lock ``tq:scheduler:leader`` (``SET NX PX``, renewed each tick, lives
``TQ_SCHEDULER_LOCK_TTL_S``) does the work every ``TQ_SCHEDULER_INTERVAL_S``. For each schedule it
takes the latest tick ``T`` at or before now and after the stored last tick (never a tick at or
before it, so a clock that goes back repeats nothing). Older ticks since the last one were missed
(an outage): they are counted, never run - at most one run per evaluation, never a burst. ``T`` runs
unless it is later than the starting deadline (then it is missed too), the schedule is suspended
(its ticks pass silently: resuming does not run them) or ``Forbid`` finds the previous job
unfinished (skipped); ``Replace`` first cancels that unfinished job (``tq.cancel``). A run is
``Producer.enqueue`` with the idempotency key
``schedule:<name>:<T epoch seconds>``, then the state's last tick moves to ``T`` (a script that only
moves it forward). A leader that dies between the two leaves the last tick behind; the next leader
enqueues ``T`` again under the same key and gets the first job's id back: each tick is enqueued
exactly once across replicas, restarts and failovers (for as long as the queue's idempotency TTL,
far longer than a takeover).

``clock`` (epoch seconds) is injectable, so tests jump it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StringConstraints, model_validator
from pydantic.alias_generators import to_camel
from redis.exceptions import RedisError

from tq import keys
from tq.cancel import JobFinished, cancel_job
from tq.connection import text
from tq.election import LeaderLock, run_periodic
from tq.envelope import FINISHED_STATES, JobState
from tq.errors import NotFound, TqError
from tq.producer import Producer, payload_json
from tq.registry import get_queue
from tq.settings import Settings, get_settings
from tq.supervise import Supervisor

log = logging.getLogger(__name__)

Clock = Callable[[], float]

FIRED, SKIPPED, MISSED = "fired", "skipped", "missed"  # the tick outcomes metrics count
TICK_OUTCOMES = (FIRED, SKIPPED, MISSED)
UNFINISHED = frozenset(s.value for s in JobState if s not in FINISHED_STATES)  # what Forbid waits for
MAX_COUNTED_MISSES = 10_000  # missed ticks counted per evaluation (a long outage of a fast cron)
STATE_FIELDS = (
    "created",
    "last",
    "next",
    "job",
    "queue",
    "outcome",
    "error",
    "fired",
    "skipped",
    "missed",
    "owner",
    "generation",
)

ScheduleName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=200)]


class ConcurrencyPolicy(StrEnum):
    """What a tick does while the schedule's previous job is unfinished."""

    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"  # the previous job is cancelled (tq.cancel), then the tick runs


class UnknownSchedule(TqError, LookupError):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown schedule {name!r}")
        self.name = name


class ManagedSchedule(TqError):
    """The schedule is managed by another owner (a ``JobSchedule``): change it there."""

    def __init__(self, name: str, owner: str) -> None:
        super().__init__(f"schedule {name!r} is managed by {owner}: change or delete it there")
        self.name = name
        self.owner = owner


class ScheduleSpec(BaseModel):
    """What a schedule declares (the ``JobSchedule`` CRD's spec, ``name`` its ``metadata.name``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, alias_generator=to_camel, populate_by_name=True)

    name: ScheduleName
    queue: str = Field(min_length=1, description="the queue the job is enqueued on")
    job: str = Field(min_length=1, description="the job's name (one of the queue's jobs)")
    payload: dict[str, Any] = Field(
        default_factory=dict,
        description="the job's payload, validated against the job's model; the string values "
        "$today, $yesterday and $tick are filled in at each tick ($$ escapes a $)",
    )
    cron: str | None = Field(None, description="five-field cron expression, in `timeZone`")
    interval_seconds: PositiveInt | None = Field(
        None, description="a tick every this many seconds (at multiples of it since the epoch)"
    )
    time_zone: str = Field("UTC", description="IANA time zone of `cron` and of the payload's dates")
    suspend: bool = Field(False, description="true: ticks pass without a job (resuming does not run them)")
    concurrency_policy: ConcurrencyPolicy = Field(
        ConcurrencyPolicy.ALLOW,
        description="Allow: every tick runs; Forbid: a tick is skipped while the previous job of the "
        "schedule is waiting, running, delayed or in retry backoff; Replace: that previous job is "
        "cancelled (removed when not started, cancelled cooperatively when running) and the tick runs",
    )
    starting_deadline_seconds: PositiveInt | None = Field(
        None, description="a tick later than this is missed, not run (unset: the latest tick always runs)"
    )

    @model_validator(mode="after")
    def _check(self) -> ScheduleSpec:
        if (self.cron is None) == (self.interval_seconds is None):
            raise ValueError("give exactly one of cron and intervalSeconds")
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {self.time_zone!r}") from None
        if self.cron is not None and (len(self.cron.split()) != 5 or not croniter.is_valid(self.cron)):
            raise ValueError(f"invalid cron expression {self.cron!r} (five fields: m h dom mon dow)")
        return self

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.time_zone)

    # ---- ticks (epoch seconds) ----------------------------------------------------------------
    def latest_tick(self, now: float) -> float:
        """The latest tick at or before ``now``."""
        if self.interval_seconds is not None:
            return float(math.floor(now / self.interval_seconds) * self.interval_seconds)
        at = datetime.fromtimestamp(math.floor(now) + 1, self.tz)  # get_prev is strictly before
        return float(croniter(self.cron, at).get_prev(float))

    def next_tick(self, now: float) -> float:
        """The first tick after ``now``."""
        if self.interval_seconds is not None:
            return float((math.floor(now / self.interval_seconds) + 1) * self.interval_seconds)
        return float(croniter(self.cron, datetime.fromtimestamp(now, self.tz)).get_next(float))

    def ticks_between(self, after: float, before: float, cap: int = MAX_COUNTED_MISSES) -> int:
        """How many ticks lie strictly between ``after`` and ``before`` (at most ``cap``)."""
        if before <= after:
            return 0
        if self.interval_seconds is not None:
            iv = self.interval_seconds
            first = (math.floor(after / iv) + 1) * iv
            return max(0, min(cap, math.ceil((before - first) / iv)))
        it = croniter(self.cron, datetime.fromtimestamp(after, self.tz))
        n = 0
        while n < cap and it.get_next(float) < before:
            n += 1
        return n

    def render_payload(self, tick: float) -> dict[str, Any]:
        """The payload for the tick at ``tick``, its ``$today``/``$yesterday``/``$tick`` filled in."""
        at = datetime.fromtimestamp(tick, self.tz)
        values = {
            "$today": at.date().isoformat(),
            "$yesterday": (at.date() - timedelta(days=1)).isoformat(),
            "$tick": at.isoformat(),
        }
        return _render(self.payload, values)

    def validate_payload(self, now: float) -> None:
        """Refuse an unknown queue or job, or a payload its model rejects (``UnknownQueue``,
        ``UnknownJob``, ``InvalidPayload``)."""
        payload_json(get_queue(self.queue), self.job, self.render_payload(now))


def _render(value: Any, values: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        if value.startswith("$$"):
            return value[1:]
        return values.get(value, value)
    if isinstance(value, dict):
        return {k: _render(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [_render(v, values) for v in value]
    return value


def idempotency_key(name: str, tick: float) -> str:
    """The key a tick is enqueued under: one job per schedule and tick, whoever fires it."""
    return f"schedule:{name}:{int(tick)}"


def _iso(epoch: float | None) -> str | None:
    return datetime.fromtimestamp(epoch, UTC).isoformat() if epoch is not None else None


def _float(value: Any) -> float | None:
    v = text(value)
    return float(v) if v else None


def parse_state(raw: Mapping[Any, Any]) -> dict[str, Any]:
    """A state hash as typed values: epoch seconds (None when unset), counts, strings."""
    h = {text(k): text(v) for k, v in raw.items()}
    return {
        "created": _float(h.get("created")),
        "last": _float(h.get("last")),
        "next": _float(h.get("next")),
        "job": h.get("job") or None,
        "queue": h.get("queue") or None,
        "outcome": h.get("outcome") or None,
        "error": h.get("error") or None,
        **{n: int(h.get(n) or 0) for n in TICK_OUTCOMES},
        "owner": h.get("owner") or None,
        "generation": int(h["generation"]) if h.get("generation") else None,
    }


# ---- managing schedules (the CLI, the operator) ---------------------------------------------------
async def owner_of(client: Any, name: str) -> str | None:
    """Who manages the schedule (``JobSchedule <namespace>/<name>``); None: nobody (the CLI's)."""
    return text(await client.hget(keys.schedule_state(name), "owner")) or None


async def add(
    client: Any,
    spec: ScheduleSpec,
    *,
    now: float | None = None,
    owner: str | None = None,
    generation: int | None = None,
) -> None:
    """Validate (registry, payload) and store ``spec``; replacing a schedule keeps its state, so its
    ticks go on from the last one. Nothing is written when it is invalid. ``owner`` (the operator)
    claims the schedule, an unmanaged one included, and records ``generation``; a schedule managed
    by another owner raises ``ManagedSchedule``, also for a caller without an owner."""
    now = time.time() if now is None else now
    spec.validate_payload(now)
    skey = keys.schedule_state(spec.name)
    if owner is not None:
        await client.hsetnx(skey, "owner", owner)  # the claim: one owner even when two race
    current = await owner_of(client, spec.name)
    if current is not None and current != owner:
        raise ManagedSchedule(spec.name, current)
    await client.hset(keys.SCHEDULES, spec.name, spec.model_dump_json(by_alias=True))
    await client.hsetnx(skey, "created", repr(now))
    fields = {"next": repr(spec.next_tick(now))}
    if generation is not None:
        fields["generation"] = str(generation)
    await client.hset(skey, mapping=fields)


async def install_defaults(client: Any, specs: list[ScheduleSpec]) -> tuple[list[str], list[str]]:
    """Store the families' default schedules (``tq schedule install-defaults``, ``make dev``): an
    existing one is updated and keeps its state and its suspension; one managed by a
    ``JobSchedule`` is left as its resource says. Returns (installed, left to their owner)."""
    installed, managed = [], []
    for spec in specs:
        if await owner_of(client, spec.name) is not None:
            managed.append(spec.name)
            continue
        try:
            current: ScheduleSpec | None = await get(client, spec.name)
        except UnknownSchedule:
            current = None
        try:
            await add(client, spec.model_copy(update={"suspend": current.suspend}) if current else spec)
        except ManagedSchedule:  # claimed by the operator meanwhile
            managed.append(spec.name)
        else:
            installed.append(spec.name)
    return installed, managed


async def get(client: Any, name: str) -> ScheduleSpec:
    raw = await client.hget(keys.SCHEDULES, name)
    if raw is None:
        raise UnknownSchedule(name)
    return ScheduleSpec.model_validate_json(raw)


async def load_all(client: Any) -> list[ScheduleSpec]:
    """Every stored schedule, by name; one that no longer parses is logged and left out."""
    out = []
    for name, raw in sorted((await client.hgetall(keys.SCHEDULES)).items()):
        try:
            out.append(ScheduleSpec.model_validate_json(raw))
        except ValueError as exc:
            log.error("schedule %s: unreadable spec, ignored: %s", text(name), exc)
    return out


async def list_with_state(client: Any) -> list[tuple[ScheduleSpec, dict[str, Any]]]:
    specs = await load_all(client)
    async with client.pipeline(transaction=False) as pipe:
        for spec in specs:
            pipe.hgetall(keys.schedule_state(spec.name))
        states = await pipe.execute() if specs else []
    return [(spec, parse_state(state)) for spec, state in zip(specs, states, strict=True)]


async def remove(client: Any, name: str, *, owner: str | None = None, force: bool = False) -> bool:
    """Delete a schedule and its state; False when there was none. A schedule managed by another
    owner raises ``ManagedSchedule`` unless ``force`` (its resource is gone for good)."""
    current = await owner_of(client, name)
    if current is not None and current != owner and not force:
        raise ManagedSchedule(name, current)
    removed = bool(await client.hdel(keys.SCHEDULES, name))
    await client.delete(keys.schedule_state(name))
    return removed


async def set_suspended(client: Any, name: str, suspend: bool) -> ScheduleSpec:
    spec = (await get(client, name)).model_copy(update={"suspend": suspend})
    await client.hset(keys.SCHEDULES, name, spec.model_dump_json(by_alias=True))
    return spec


async def run_now(
    client: Any, name: str, settings: Settings | None = None, *, now: float | None = None
) -> str:
    """Enqueue the schedule's job at once (outside its ticks; no idempotency key) and record it as
    the last job. Returns the job id."""
    spec = await get(client, name)
    now = time.time() if now is None else now
    job_id = await Producer(client, settings).enqueue(spec.queue, spec.job, spec.render_payload(now))
    await client.hset(
        keys.schedule_state(name),
        mapping={"job": job_id, "queue": spec.queue, "outcome": "waiting", "error": ""},
    )
    return job_id


# ---- the elected scheduler -----------------------------------------------------------------------
class ScheduleObserver(Protocol):
    """An observer (``tq.observe``) may have ``schedule_ticks``: called by the leader with the
    schedule, its queue, one of ``TICK_OUTCOMES`` and how many ticks had it."""

    def schedule_ticks(self, schedule: str, queue: str, outcome: str, count: int) -> None: ...


# The scheduler writes a schedule's state only while it exists: a schedule removed after a tick
# listed it (``remove`` deletes the hash) must not get it back from that tick's writes.
# KEYS[1] the state hash. ARGV: field/value pairs.
_SET_STATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSET', KEYS[1], unpack(ARGV))
"""

# KEYS[1] the state hash. ARGV: 1 tick, 2..4 fired/skipped/missed increments, then field/value pairs.
# Moves the last tick forward only: a stale leader or a clock gone back cannot rewind it.
_ADVANCE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '-1')
if tonumber(ARGV[1]) <= last then return 0 end
redis.call('HSET', KEYS[1], 'last', ARGV[1])
for i = 5, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
if ARGV[2] ~= '0' then redis.call('HINCRBY', KEYS[1], 'fired', ARGV[2]) end
if ARGV[3] ~= '0' then redis.call('HINCRBY', KEYS[1], 'skipped', ARGV[3]) end
if ARGV[4] ~= '0' then redis.call('HINCRBY', KEYS[1], 'missed', ARGV[4]) end
return 1
"""


class Scheduler:
    """The schedules duty of one process: ``await scheduler.tick()`` once, ``run_forever(stop)`` for
    the life of the process. Only the holder of ``tq:scheduler:leader`` fires."""

    def __init__(
        self,
        client: Any,
        settings: Settings | None = None,
        *,
        clock: Clock = time.time,
        interval_s: float | None = None,
        lock_ttl_s: float | None = None,
        token: str | None = None,
        observer: Any = None,
    ) -> None:
        self.client = client
        self.settings = settings or get_settings()
        self.clock = clock
        self.interval_s = interval_s if interval_s is not None else self.settings.scheduler_interval_s
        self.lock = LeaderLock(
            client,
            keys.SCHEDULER_LEADER,
            lock_ttl_s if lock_ttl_s is not None else self.settings.scheduler_lock_ttl_s,
            "scheduler",
            token,
        )
        self._hook: Callable[[str, str, str, int], None] | None = getattr(observer, "schedule_ticks", None)
        self._advance = client.register_script(_ADVANCE)
        self._set_state = client.register_script(_SET_STATE)
        self.producer = Producer(client, self.settings)
        self.fired = 0  # ticks this process enqueued (a duplicate included)

    @property
    def is_leader(self) -> bool:
        return self.lock.is_leader

    async def acquire(self) -> bool:
        return await self.lock.acquire()

    async def release(self) -> None:
        await self.lock.release()

    def _count(self, spec: ScheduleSpec, outcome: str, count: int) -> None:
        if count and self._hook is not None:
            try:
                self._hook(spec.name, spec.queue, outcome, count)
            except Exception:
                log.exception("schedule observer failed")

    async def tick(self) -> bool:
        """When leader: evaluate every schedule once. Returns whether this process was the leader."""
        if not await self.acquire():
            return False
        now = self.clock()
        for spec, state in await list_with_state(self.client):
            try:
                await self._evaluate(spec, state, now)
            except (RedisError, OSError):
                raise  # the duty's supervisor retries the whole tick
            except Exception:  # one broken schedule does not stop the others
                log.exception("schedule %s: evaluation failed", spec.name)
        return True

    async def _outcome(self, queue: str, job_id: str) -> str | None:
        """The job's state from its record (``active`` when delivered); None when the record is gone."""
        state, entry = await self.client.hmget(keys.job(queue, job_id), "s", "x")
        if state is None:  # a waiting job's record holds only its entry id
            return JobState.WAITING.value if entry is not None else None
        return text(state)

    async def _replace(self, name: str, state: dict[str, Any]) -> None:
        """Replace: cancel the schedule's unfinished previous job before its next tick runs."""
        try:
            done = await cancel_job(self.client, state["queue"], state["job"], self.settings)
        except (NotFound, JobFinished):  # it ended meanwhile: nothing to replace
            return
        log.info("schedule %s: previous job %s %s (Replace)", name, done.job_id, done.outcome.value)

    async def _evaluate(self, spec: ScheduleSpec, state: dict[str, Any], now: float) -> None:
        name, skey = spec.name, keys.schedule_state(spec.name)
        observed: list[str] = []  # what changed of the state: written in one call
        if state["job"] and state["queue"] and state["outcome"] in UNFINISHED:  # observe the last job
            outcome = await self._outcome(state["queue"], state["job"])
            if outcome != state["outcome"]:
                state["outcome"] = outcome
                observed += ["outcome", outcome or "expired"]
        nxt = spec.next_tick(now)
        if state["next"] != nxt:
            observed += ["next", repr(nxt)]
        if observed:
            await self._set_state(keys=[skey], args=observed)
        base = state["last"] if state["last"] is not None else state["created"]
        if base is None:  # state lost (or written by hand): start counting from now
            await self.client.hsetnx(skey, "created", repr(now))
            return
        tick = spec.latest_tick(now)
        if tick <= base:
            return  # nothing due (or the clock went back: nothing repeats)
        missed = spec.ticks_between(base, tick)
        fields: dict[str, str] = {}
        fired = skipped = 0
        if spec.suspend:
            missed = 0  # a suspended schedule's ticks pass silently
        elif spec.starting_deadline_seconds is not None and now - tick > spec.starting_deadline_seconds:
            missed += 1
        elif spec.concurrency_policy is ConcurrencyPolicy.FORBID and state["outcome"] in UNFINISHED:
            skipped = 1
        else:
            if spec.concurrency_policy is ConcurrencyPolicy.REPLACE and state["outcome"] in UNFINISHED:
                await self._replace(name, state)
            try:
                job_id = await self.producer.enqueue(
                    spec.queue,
                    spec.job,
                    spec.render_payload(tick),
                    idempotency_key=idempotency_key(name, tick),
                )
            except (RedisError, OSError):
                raise
            except TqError as exc:  # the registry changed under the schedule: skipped with the reason
                log.error("schedule %s: tick %s not enqueued: %s", name, _iso(tick), exc)
                skipped = 1
                fields["error"] = str(exc)
            else:
                fired = 1
                self.fired += 1
                fields.update(job=job_id, queue=spec.queue, outcome="waiting", error="")
        args: list[Any] = [repr(tick), fired, skipped, missed]
        for k, v in fields.items():
            args += [k, v]
        if await self._advance(keys=[skey], args=args):
            self._count(spec, FIRED, fired)
            self._count(spec, SKIPPED, skipped)
            self._count(spec, MISSED, missed)
            if missed:
                log.warning("schedule %s: %d tick(s) missed before %s", name, missed, _iso(tick))

    async def run_forever(self, stop: asyncio.Event, supervisor: Supervisor | None = None) -> None:
        """Tick every interval until ``stop`` is set, then release the lock. Supervised like every
        elected duty (``tq.election.run_periodic``)."""
        await run_periodic("scheduler", self.tick, self.interval_s, stop, self.release, supervisor)


def describe(spec: ScheduleSpec) -> str:
    """``cron "0 2 * * *" Europe/Berlin`` or ``every 60s``."""
    if spec.cron is not None:
        return f"cron {spec.cron!r} {spec.time_zone}"
    return f"every {spec.interval_seconds}s"
