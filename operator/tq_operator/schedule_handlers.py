"""kopf handlers for JobSchedule: the spec -> a schedule in Redis (``tq.schedules``), its observed
state -> status. The operator is not in the data path: the elected scheduler of the worker
processes fires the schedule whether the operator runs or not.

One function (``_reconcile``) serves create/update/resume and the refresh timer:

- validate: the spec against ``tq.schedules.ScheduleSpec`` (cron, time zone, exactly one of cron
  and intervalSeconds), then the queue, the job and the payload against the registry. Refused:
  ``Ready=False`` with the reason (``InvalidSpec``, ``UnknownQueue``, ``UnknownJob``,
  ``InvalidPayload``) and a Warning Event, nothing written and nothing raised, so kopf does not
  retry a spec that cannot succeed (a schedule written by an earlier generation keeps running);
- ownership: the schedule's name in Redis is ``metadata.name``; the operator writes it as owner
  ``JobSchedule <namespace>/<name>`` (``tq.schedules.add(owner=...)``). A name managed by a
  JobSchedule of another watched namespace (one Redis) is a ``Conflict``: the first keeps it, the
  timer retries. An unmanaged schedule of that name (the CLI's defaults) is adopted, keeping its
  state;
- write only when the resource's generation differs from the one stored with the schedule, or
  Redis lost it: a suspension from ``tq schedule suspend`` or the admin page then holds until the
  spec changes (condition ``Suspended``, reason ``SuspendedOutsideKubernetes``);
- status from the state the scheduler keeps: last and next schedule time, the last job and its
  outcome, the fired/skipped/missed counts. Events: ``Enqueued`` for each new job, ``MissedSchedule``
  when ticks were missed, ``Suspended``/``Resumed``.

Deleting the resource removes the schedule (and its state) from Redis when this resource owns it;
jobs already enqueued stay. Each handler run is measured (``tq_operator.metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import kopf
from pydantic import ValidationError
from tq import keys, schedules
from tq.errors import InvalidPayload, UnknownJob, UnknownQueue
from tq.schedules import ManagedSchedule, ScheduleSpec, UnknownSchedule

from tq_operator import metrics
from tq_operator.conditions import StatusUpdate, rfc3339
from tq_operator.conditions import error_text as _error_text
from tq_operator.handlers import IDLE_S, REDIS_DOWN, REDIS_RETRY_S, REFRESH_S
from tq_operator.jobschedule import KIND, PLURAL
from tq_operator.spec import GROUP, VERSION

RESOURCE = (GROUP, VERSION, PLURAL)

_REFUSALS: tuple[tuple[type[Exception], str], ...] = (
    (ValidationError, "InvalidSpec"),
    (UnknownQueue, "UnknownQueue"),
    (UnknownJob, "UnknownJob"),
    (InvalidPayload, "InvalidPayload"),
)


def owner_of_resource(namespace: str, name: str) -> str:
    """The owner a JobSchedule writes its schedule as (``tq.schedules``' ``owner``)."""
    return f"{KIND} {namespace}/{name}"


def _iso(epoch: float | None) -> str | None:
    return None if epoch is None else rfc3339(epoch)


def parse(spec: Mapping[str, Any], name: str, now: float) -> ScheduleSpec:
    """The resource's spec as the engine's model, its queue, job and payload checked against the
    registry; raises one of ``_REFUSALS``' exceptions."""
    parsed = ScheduleSpec.model_validate({**dict(spec), "name": name})
    parsed.validate_payload(now)
    return parsed


def _refusal(exc: Exception) -> str:
    return next(reason for kind, reason in _REFUSALS if isinstance(exc, kind))


def observed(spec: ScheduleSpec, state: Mapping[str, Any]) -> dict[str, Any]:
    """The status fields read from the schedule's state in Redis."""
    return {
        "schedule": schedules.describe(spec),
        "suspended": spec.suspend,
        "lastScheduleTime": _iso(state["last"]),
        "nextScheduleTime": _iso(state["next"]),
        "lastJobId": state["job"],
        "lastJobOutcome": state["outcome"],
        "lastError": state["error"],
        "ticks": {n: state[n] for n in schedules.TICK_OUTCOMES},
    }


async def _reconcile(
    *,
    body: kopf.Body,
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    patch: kopf.Patch,
    memo: Any,
    logger: Any,
) -> str:
    """The outcome (``ok``, ``invalid``, ``conflict``; tq_operator.metrics counts it)."""
    client = memo["redis"]
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "")
    owner = owner_of_resource(namespace, name)
    generation = int(meta.get("generation") or 0)
    st = StatusUpdate(status, patch, generation)
    cond, flush, out = st.set, st.flush, st.fields

    def refuse(reason: str, message: str) -> None:
        st.refuse(body, logger, reason, message)

    try:
        parsed = parse(spec, name, time.time())
    except tuple(kind for kind, _ in _REFUSALS) as exc:
        message = _error_text(exc)
        try:
            if await schedules.owner_of(client, name) == owner:
                message += "; the schedule keeps its last valid spec"
        except REDIS_DOWN:
            pass
        refuse(_refusal(exc), message)
        return "invalid"

    skey = keys.schedule_state(name)
    try:
        state = schedules.parse_state(await client.hgetall(skey))
        stored = await client.hexists(keys.SCHEDULES, name)
        if state["owner"] not in (None, owner):
            raise ManagedSchedule(name, state["owner"])
        written = not stored or state["owner"] != owner or state["generation"] != generation
        if written:
            await schedules.add(client, parsed, owner=owner, generation=generation)
            logger.info(f"wrote schedule {name} (generation {generation}) to Redis")
            if state["owner"] != owner:
                kopf.event(body, type="Normal", reason="Written", message=f"schedule {name} written to Redis")
        try:
            current = await schedules.get(client, name)
        except (UnknownSchedule, ValueError):  # removed meanwhile, or edited by hand into nonsense
            await schedules.add(client, parsed, owner=owner, generation=generation)
            current, written = parsed, True
        if written:  # the state as the write left it (owner, generation); else as read above
            state = schedules.parse_state(await client.hgetall(skey))
    except ManagedSchedule as exc:
        message = f"the schedule {name!r} in Redis is managed by {exc.owner}"
        cond("Conflict", "True", "DuplicateName", message)
        refuse("Conflict", message)
        return "conflict"
    except (InvalidPayload, UnknownQueue, UnknownJob) as exc:  # the registry changed between the checks
        refuse(_refusal(exc), _error_text(exc))
        return "invalid"
    except REDIS_DOWN as exc:
        raise st.redis_unavailable(exc, REDIS_RETRY_S) from exc

    if st.condition("Conflict"):
        cond("Conflict", "False", "NoConflict", f"this JobSchedule manages the schedule {name}")
    out.update(observed(current, state))

    was_suspended = st.condition("Suspended").get("status")
    if current.suspend:
        if parsed.suspend:
            cond("Suspended", "True", "SuspendedBySpec", "spec.suspend: ticks pass without a job")
        else:
            cond(
                "Suspended",
                "True",
                "SuspendedOutsideKubernetes",
                "suspended by `tq schedule suspend` or the admin page; the next change of this "
                "JobSchedule's spec applies spec.suspend again",
            )
    elif parsed.suspend:
        cond(
            "Suspended",
            "False",
            "ResumedOutsideKubernetes",
            "resumed by `tq schedule resume` or the admin page; the next change of this JobSchedule's "
            "spec applies spec.suspend again",
        )
    else:
        cond("Suspended", "False", "Active", "the scheduler fires every tick")
    if current.suspend and was_suspended != "True":
        kopf.event(body, type="Normal", reason="Suspended", message=f"schedule {name} suspended")
    elif not current.suspend and was_suspended == "True":
        kopf.event(body, type="Normal", reason="Resumed", message=f"schedule {name} resumed")

    # Events for what happened since the last status (none for the history of an adopted schedule)
    seen = status.get("ticks")
    if seen is not None and state["job"] and state["job"] != status.get("lastJobId"):
        fired = state["fired"] > int(seen.get("fired") or 0)
        at = f"for the tick at {out['lastScheduleTime']}" if fired else "outside the ticks (run now)"
        message = f"enqueued job {state['job']} on {current.queue} {at}"
        kopf.event(body, type="Normal", reason="Enqueued", message=message)
    missed_before = int((seen or {}).get("missed") or 0)
    if seen is not None and state["missed"] > missed_before:
        kopf.event(
            body,
            type="Warning",
            reason="MissedSchedule",
            message=f"{state['missed'] - missed_before} tick(s) missed (past the starting deadline or while "
            f"no scheduler ran); the last tick handled: {out['lastScheduleTime']}",
        )

    cond(
        "Ready",
        "True",
        "Scheduled",
        f"schedule written to Redis (generation {state['generation'] or generation}); the elected "
        "scheduler of the workers fires it",
    )
    flush()
    return "ok"


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
async def reconcile_schedule(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    await metrics.measured(
        "schedule-reconcile",
        _reconcile(body=body, spec=spec, meta=meta, status=status, patch=patch, memo=memo, logger=logger),
    )


@kopf.timer(*RESOURCE, interval=REFRESH_S, idle=IDLE_S)
async def refresh_schedule(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: Any,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    """Last/next schedule time, the last job and its outcome; rewrites the schedule if Redis lost
    it, claims it when a conflicting owner went away."""
    await metrics.measured(
        "schedule-refresh",
        _reconcile(body=body, spec=spec, meta=meta, status=status, patch=patch, memo=memo, logger=logger),
    )


@kopf.on.delete(*RESOURCE)
async def release_schedule(meta: kopf.Meta, memo: Any, logger: kopf.Logger, **_: Any) -> None:
    """Remove the schedule this resource manages from Redis; the jobs it enqueued stay."""
    await metrics.measured("schedule-release", _release(meta, memo, logger))


async def _release(meta: kopf.Meta, memo: Any, logger: kopf.Logger) -> str:
    name = str(meta.get("name") or "")
    owner = owner_of_resource(str(meta.get("namespace") or ""), name)
    client = memo["redis"]
    try:
        if await schedules.owner_of(client, name) != owner:
            return "conflict"  # never written by this resource (invalid, or another's): not ours to remove
        await schedules.remove(client, name, owner=owner)
    except REDIS_DOWN as exc:
        raise kopf.TemporaryError(f"Redis unreachable: {exc}", delay=REDIS_RETRY_S) from exc
    logger.info(f"schedule {name} removed from Redis")
    return "ok"
