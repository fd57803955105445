"""kopf handlers for QueueConfig: desired runtime config -> Redis, observed state -> status.

One function (``_reconcile``) does the work for create/update/resume and for the refresh timer:
validate the spec, refuse it when an older QueueConfig of the same namespace owns the queue (each
namespace is its own environment, with its own Redis: ownership is decided per namespace), write
the runtime config to Redis when it differs, handle the replay/purge annotations (not from the
timer; one-shot: removed once handled, the result in status, replay tokens also remembered in
Redis so a re-created object does not replay again), then derive status (observedGeneration,
conditions Ready/Paused/Applied[/Conflict][/Scaled], depth, consumers) and patch only the keys
that changed; with spec.replicas it also scales the family's Deployment
(``tq_operator.scaling``). Deleting the owner of a queue resets the queue to registry defaults.
Each handler run is measured (``tq_operator.metrics``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import kopf
from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from tq import config, dlq, jobs, keys
from tq.registry import PRODUCT_QUEUE_NAMES, get_queue

from tq_operator import kube, metrics, scaling
from tq_operator.conditions import StatusUpdate
from tq_operator.conditions import error_text as _error_text
from tq_operator.conditions import now as _now
from tq_operator.crd import PLURAL
from tq_operator.settings import get_operator_settings
from tq_operator.spec import GROUP, VERSION, QueueConfigSpec, SpecError, to_override, to_runtime_config

RESOURCE = (GROUP, VERSION, PLURAL)
REPLAY = f"{GROUP}/replay"
REPLAY_LIMIT = f"{GROUP}/replay-limit"
REPLAY_FILTER = f"{GROUP}/replay-filter"
PURGE = f"{GROUP}/purge-dlq"

# How often the timer refreshes depth, consumers and Applied; it waits until the resource has been
# left alone for IDLE_S, so it does not race the change handlers.
REFRESH_S = get_operator_settings().operator_refresh_s  # read at import: kopf takes timer intervals there
IDLE_S = min(REFRESH_S, 2.0)
REDIS_RETRY_S = 10.0

REDIS_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(frozen=True, order=True)
class Owner:
    """Index entry under (namespace, queue): the oldest QueueConfig of a namespace owns its queue."""

    created: str
    uid: str
    namespace: str
    name: str


async def applied(client: Any, queue: str, generation: int) -> tuple[int, int]:
    """(live consumers, how many of them report ``generation`` for ``queue`` in their heartbeat)."""
    now_ms = int(time.time() * 1000)
    ids = await client.zrangebyscore(keys.consumers(queue), now_ms, "+inf")
    if not ids:
        return 0, 0
    names = [i.decode() if isinstance(i, bytes) else str(i) for i in ids]
    infos = await client.mget([keys.consumer_info(queue, n) for n in names])
    live = done = 0
    for raw in infos:
        if raw is None:  # expired between the two reads: not live any more
            continue
        live += 1
        try:
            gen = json.loads(raw).get("generation", {}).get(queue)
        except (ValueError, AttributeError):
            gen = None
        done += gen == generation
    return live, done


def _owner_of(index: kopf.Index[tuple[str, str], Owner] | None, namespace: str, queue: str) -> Owner | None:
    """The owner of ``queue`` among the QueueConfigs of ``namespace`` (never another namespace's)."""
    entries = list(index.get((namespace, queue), [])) if index is not None else []
    return min(entries) if entries else None


def _parse_replay(annotations: Mapping[str, str]) -> tuple[int | None, str | None, str | None]:
    """(limit, error_type, text) from the replay annotations; ValueError when the limit is bad."""
    raw_limit = annotations.get(REPLAY_LIMIT)
    limit = None
    if raw_limit:
        limit = int(raw_limit)
        if limit < 1:
            raise ValueError(f"{REPLAY_LIMIT} must be a positive integer, got {raw_limit!r}")
    flt = annotations.get(REPLAY_FILTER) or None
    if flt and flt.startswith("type:"):
        return limit, flt.removeprefix("type:"), None
    return limit, None, flt  # text: matches id, name, error type and message


def handled_tokens_key(queue: str) -> str:
    """ZSET replay token -> when it was handled (ms): the replays done for ``queue`` in this
    environment (its Redis). Outlives the QueueConfig, so a re-created or restored object that still
    carries a handled token does not replay again. The operator's own key (tq.keys is the engine's)."""
    return f"tq:operator:{{{queue}}}:replays"


HANDLED_TOKENS_KEPT = 256  # the newest tokens remembered per queue


async def _token_handled(client: Any, queue: str, token: str, status: Mapping[str, Any]) -> bool:
    if (status.get("lastReplay") or {}).get("token") == token:
        return True
    return await client.zscore(handled_tokens_key(queue), token) is not None


async def _remember_token(client: Any, queue: str, token: str) -> None:
    key = handled_tokens_key(queue)
    await client.zadd(key, {token: int(time.time() * 1000)})
    await client.zremrangebyrank(key, 0, -HANDLED_TOKENS_KEPT - 1)


async def _handle_annotations(
    client: Any,
    queue: str,
    body: kopf.Body,
    annotations: Mapping[str, str],
    status: Mapping[str, Any],
    out: dict[str, Any],
    logger: Any,
) -> None:
    """The one-shot requests: each is acted on at most once, then its annotation is removed and its
    result recorded in status (``lastReplay``, ``lastPurge``), as Strimzi does with its annotations."""
    token = annotations.get(REPLAY)
    if token:
        out["_remove"] = [*out.get("_remove", []), REPLAY]
        if await _token_handled(client, queue, token, status):
            logger.info(f"replay token {token} of {queue} was handled before: nothing replayed")
        else:
            try:
                limit, error_type, text = _parse_replay(annotations)
            except ValueError as exc:
                kopf.event(body, type="Warning", reason="ReplayRefused", message=str(exc))
                out["lastReplay"] = {
                    "token": token,
                    "result": "Refused",
                    "message": str(exc),
                    "replayed": 0,
                    "skipped": 0,
                    "at": _now(),
                }
            else:
                result = await dlq.replay(client, queue, limit=limit, error_type=error_type, text=text)
                msg = (
                    f"replayed {result.replayed} DLQ entries of {queue} (skipped {result.skipped}), "
                    f"token {token}"
                )
                out["lastReplay"] = {
                    "token": token,
                    "result": "Replayed",
                    "message": msg,
                    "replayed": result.replayed,
                    "skipped": result.skipped,
                    "at": _now(),
                }
                logger.info(msg)
                kopf.event(body, type="Normal", reason="Replayed", message=msg)
            await _remember_token(client, queue, token)
    confirm = annotations.get(PURGE)
    if confirm:
        purged, outcome = 0, "Refused"
        if not status.get("observedGeneration"):
            # A purge names no token to remember, so a QueueConfig this operator never reconciled
            # (new, or restored from a backup or a Git repository with an old request) never purges.
            msg = (
                f"{PURGE} on a QueueConfig not yet reconciled is ignored (a restored or re-synced "
                "object may carry an old request): annotate the existing object to purge"
            )
        elif confirm == queue:
            purged, outcome = await dlq.purge(client, queue, confirm), "Purged"
            msg = f"purged {purged} DLQ entries of {queue}"
        else:
            msg = f"{PURGE}={confirm!r} does not name the queue {queue!r}: nothing purged"
        out["lastPurge"] = {
            "request": confirm,
            "result": outcome,
            "message": msg,
            "purged": purged,
            "at": _now(),
        }
        if outcome == "Purged":
            kopf.event(body, type="Normal", reason="Purged", message=msg)
        else:
            kopf.event(body, type="Warning", reason="PurgeRefused", message=msg)
        # The request is one-shot: drop it, so a resync or restart does not purge again.
        out["_remove"] = [*out.get("_remove", []), PURGE]


async def _reconcile(
    *,
    body: kopf.Body,
    spec: Mapping[str, Any],
    meta: Mapping[str, Any],
    status: Mapping[str, Any],
    patch: kopf.Patch,
    memo: Any,
    by_queue: kopf.Index[tuple[str, str], Owner] | None,
    by_family: kopf.Index[str, scaling.FamilyMember] | None,
    settings: kopf.OperatorSettings,
    logger: Any,
    actions: bool,
) -> str:
    """The outcome (``ok``, ``invalid``, ``conflict``; tq_operator.metrics counts it)."""
    client = memo["redis"]
    generation = int(meta.get("generation") or 0)
    st = StatusUpdate(status, patch, generation)
    cond, flush, out = st.set, st.flush, st.fields

    try:
        parsed = QueueConfigSpec.model_validate(dict(spec))
        override = to_override(parsed, generation)  # what is written: the spec's fields only
        cfg = to_runtime_config(parsed, generation=generation)  # checked merged; Paused reads it
    except (ValidationError, SpecError) as exc:
        message = _error_text(exc)
        st.refuse(body, logger, "InvalidSpec", message, log=f"invalid spec: {message}")
        return "invalid"

    queue = parsed.queue
    namespace = str(meta.get("namespace") or "")
    owner = _owner_of(by_queue, namespace, queue)
    if owner is not None and owner.uid != meta.get("uid"):
        message = f"queue {queue} is configured by the older QueueConfig {owner.namespace}/{owner.name}"
        cond("Conflict", "True", "DuplicateQueue", message)
        cond("Ready", "False", "Conflict", message)
        flush()
        return "conflict"
    if st.condition("Conflict"):
        cond("Conflict", "False", "NoConflict", f"this QueueConfig owns queue {queue}")

    try:
        try:
            current = config.to_hash(await config.read_override(client, queue))
        except ValidationError:  # a value the model refuses (a hand edit): replace it
            current = {}
        if current != config.to_hash(override):
            await config.write(client, queue, override)
            logger.info(f"wrote runtime config generation {generation} of {queue}")
        if actions:
            await _handle_annotations(client, queue, body, meta.get("annotations") or {}, status, out, logger)
        counts = await jobs.counts(client, queue)
        live, done = await applied(client, queue, generation)
    except REDIS_DOWN as exc:
        raise st.redis_unavailable(exc, REDIS_RETRY_S) from exc

    uid = str(meta.get("uid") or "")
    members = list(by_family.get(scaling.family_key(namespace, queue), [])) if by_family else []
    # The index may lag this very change: count this QueueConfig as it is now.
    members = [m for m in members if m.uid != uid]
    members.append(scaling.FamilyMember(uid=uid, queue=queue, replicas=parsed.replicas, paused=cfg.paused))
    owners = {m.queue: (o.uid if (o := _owner_of(by_queue, namespace, m.queue)) else m.uid) for m in members}
    owners[queue] = uid  # checked above: this QueueConfig owns its queue
    if parsed.replicas is None:
        st.conditions = [c for c in st.conditions if c.get("type") != "Scaled"]
    else:
        desired = scaling.desired_replicas(members, owners)
        assert desired is not None  # this QueueConfig sets replicas
        try:
            result = await scaling.scale_family(
                settings=settings, logger=logger, body=body, namespace=namespace, queue=queue, desired=desired
            )
        except kube.APIError as exc:
            cond("Scaled", "False", "ScaleFailed", f"cannot scale: {exc}")
            flush()
            raise kopf.TemporaryError(f"scaling failed: {exc}", delay=REDIS_RETRY_S) from exc
        cond("Scaled", result.status, result.reason, result.message)
    family = get_queue(queue).family
    try:  # KEDA would scale a family whose queues are all paused up on their growing lag
        await scaling.pause_keda_scaling(
            settings=settings,
            logger=logger,
            body=body,
            namespace=namespace,
            family=family,
            paused=scaling.family_paused(family, members, owners),
        )
    except kube.APIError as exc:  # the refresh timer tries again
        logger.warning(f"cannot pause or resume KEDA scaling of family {family}: {exc}")

    was_paused = st.condition("Paused").get("status")
    if cfg.paused:
        cond("Paused", "True", "PausedBySpec", f"consumers of {queue} take no new jobs")
    else:
        cond("Paused", "False", "Running", f"consumers of {queue} take jobs")
    if cfg.paused and was_paused != "True":
        kopf.event(body, type="Normal", reason="Paused", message=f"queue {queue} paused")
    elif not cfg.paused and was_paused == "True":
        kopf.event(body, type="Normal", reason="Resumed", message=f"queue {queue} resumed")

    if live == 0:
        cond("Applied", "Unknown", "NoConsumers", f"no live consumer of {queue}")
    elif done == live:
        cond("Applied", "True", "AllConsumersApplied", f"{live} consumer(s) run generation {generation}")
    else:
        cond("Applied", "False", "Pending", f"{done} of {live} consumer(s) run generation {generation}")
    cond("Ready", "True", "Reconciled", f"runtime config generation {generation} written to Redis")

    out["depth"] = {
        "waiting": counts["waiting"],
        "active": counts["active"],
        "delayed": counts["delayed"],
        "dlq": counts["dead"],
    }
    out["consumers"] = live
    flush()
    return "ok"


@kopf.index(*RESOURCE)
def by_queue(spec: kopf.Spec, meta: kopf.Meta, namespace: str | None, name: str | None, **_: Any) -> Any:
    queue = spec.get("queue")
    if not isinstance(queue, str):
        return None
    return {
        (namespace or "", queue): Owner(
            created=str(meta.get("creationTimestamp") or ""),
            uid=str(meta.get("uid") or ""),
            namespace=namespace or "",
            name=name or "",
        )
    }


@kopf.index(*RESOURCE)
def by_family(spec: kopf.Spec, meta: kopf.Meta, namespace: str | None, **_: Any) -> Any:
    return scaling.index_entry(spec, meta, namespace)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE)
async def reconcile(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: Any,
    logger: kopf.Logger,
    settings: kopf.OperatorSettings | None = None,  # kopf passes it; only timeouts are read from it
    by_queue: kopf.Index[tuple[str, str], Owner] | None = None,  # the indices above; kopf passes them by name
    by_family: kopf.Index[str, scaling.FamilyMember] | None = None,
    **_: Any,
) -> None:
    await metrics.measured(
        "reconcile",
        _reconcile(
            body=body,
            spec=spec,
            meta=meta,
            status=status,
            patch=patch,
            memo=memo,
            by_queue=by_queue,
            by_family=by_family,
            settings=settings or kopf.OperatorSettings(),
            logger=logger,
            actions=True,
        ),
    )


@kopf.timer(*RESOURCE, interval=REFRESH_S, idle=IDLE_S)
async def refresh(
    body: kopf.Body,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    patch: kopf.Patch,
    memo: Any,
    logger: kopf.Logger,
    settings: kopf.OperatorSettings | None = None,  # kopf passes it; only timeouts are read from it
    by_queue: kopf.Index[tuple[str, str], Owner] | None = None,  # the indices above; kopf passes them by name
    by_family: kopf.Index[str, scaling.FamilyMember] | None = None,
    **_: Any,
) -> None:
    """Depth, consumers and Applied; rewrites the config if Redis lost it or a conflict ended, and
    re-applies the family's replicas when another QueueConfig of the family changed them."""
    await metrics.measured(
        "refresh",
        _reconcile(
            body=body,
            spec=spec,
            meta=meta,
            status=status,
            patch=patch,
            memo=memo,
            by_queue=by_queue,
            by_family=by_family,
            settings=settings or kopf.OperatorSettings(),
            logger=logger,
            actions=False,
        ),
    )


@kopf.on.delete(*RESOURCE)
async def release(
    spec: kopf.Spec,
    meta: kopf.Meta,
    memo: Any,
    logger: kopf.Logger,
    by_queue: kopf.Index[tuple[str, str], Owner] | None = None,  # the index above; kopf passes it by name
    **_: Any,
) -> None:
    """The owner of a queue going away returns the queue to registry defaults (unpaused); jobs stay."""
    await metrics.measured("release", _release(spec, meta, memo, logger, by_queue))


async def _release(
    spec: kopf.Spec,
    meta: kopf.Meta,
    memo: Any,
    logger: kopf.Logger,
    by_queue: kopf.Index[tuple[str, str], Owner] | None,
) -> str:
    queue = spec.get("queue")
    if not isinstance(queue, str):
        return "invalid"
    owner = _owner_of(by_queue, str(meta.get("namespace") or ""), queue)
    if owner is not None and owner.uid != meta.get("uid"):
        return "conflict"  # a newer duplicate never wrote anything
    if queue not in PRODUCT_QUEUE_NAMES:
        return "invalid"  # such a spec never wrote anything
    try:
        await config.reset(memo["redis"], queue)
    except REDIS_DOWN as exc:
        raise kopf.TemporaryError(f"Redis unreachable: {exc}", delay=REDIS_RETRY_S) from exc
    logger.info(f"queue {queue} reset to registry defaults")
    return "ok"
