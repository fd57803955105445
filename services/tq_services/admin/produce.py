"""Enqueue over HTTP, for producers in any language: ``POST /api/jobs/{queue}/{job}`` (one job; the
body is the job's payload) and ``POST /api/jobs/{queue}/{job}/batch`` (``{"jobs": [{"payload": ...,
"idempotency_key"?, "delay_s"?}, ...]}``, all or nothing).

``router(admin)`` builds one pair of routes per (queue, job) of the registry when the app is built,
each with the job's own payload model as its body: FastAPI validates it (422 naming the field, e.g.
``body.to`` or ``body.jobs.3.payload.to``) and the OpenAPI document carries one schema per job.
A queue or job the registry does not know is a 404 naming the known ones. The job is written by the
engine's own ``tq.producer.Producer`` (same checks, same script as Python producers).

Who may call: tokens with role ``producer`` or ``owner`` (``auth.authorize_enqueue``; a producer may
call nothing else). The calls have their own per-token rate limit (``TQ_ADMIN_PRODUCE_RATE_LIMIT``
per ``TQ_ADMIN_RATE_WINDOW_S``; a batch is one call). ``Idempotency-Key``: the same key on the same
queue within the queue's ``idempotency_ttl_s`` gives back the first job's id, answered 200 with
``duplicate: true`` (a new job: 201); on a batch, item ``i`` without its own key gets ``<key>:<i>``,
so a retried batch enqueues nothing twice. Audited as counted summaries (``produce_audit``).

No ``from __future__ import annotations`` here: the endpoints are made in a loop, and FastAPI reads
their parameters' annotations (the job's model) at build time.
"""

import logging
import re
from collections.abc import Callable, Coroutine, Sequence
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, create_model
from redis.exceptions import RedisError
from tq.errors import InvalidPayload, PayloadTooLarge, TqError
from tq.producer import EnqueueResult, JobRequest
from tq.registry import all_queues, get_queue

from tq_services.admin import metrics, produce_audit
from tq_services.admin.auditing import REFUSALS, audit_row, failure, refused
from tq_services.admin.auth import Principal, authorize_enqueue
from tq_services.admin.deps import Credentials, caller, over_limit
from tq_services.admin.errors import ApiError, error_code, from_tq_error, invalid
from tq_services.admin.settings import AdminSettings
from tq_services.admin.state import admin_state

log = logging.getLogger(__name__)

PREFIX = "/api/jobs"
MAX_DELAY_S = 366 * 86400.0
_TARGET = "__tq_produce_target__"
KEY_MAX = 240  # an Idempotency-Key header: leaves room for a batch item's ":<index>" in the engine's 256
_KEY_HELP = (
    "the same key on the same queue (within its idempotency_ttl_s) gives back the first job's id "
    "(200, duplicate: true) instead of a new job"
)

IdempotencyKey = Annotated[
    str | None, Header(alias="Idempotency-Key", min_length=1, max_length=KEY_MAX, description=_KEY_HELP)
]
DelayQuery = Annotated[
    float, Query(ge=0, le=MAX_DELAY_S, allow_inf_nan=False, description="run no sooner than this (s)")
]


class Enqueued(BaseModel):
    queue: str
    job: str
    id: str = Field(description="the job's id (the first job's, for a held idempotency key)")
    duplicate: bool = Field(description="true: the idempotency key was held; nothing new was enqueued")


class EnqueuedItem(BaseModel):
    id: str
    duplicate: bool


class BatchEnqueued(BaseModel):
    queue: str
    job: str
    jobs: list[EnqueuedItem] = Field(description="one per item, in the request's order")
    created: int
    duplicates: int


async def produce_guard(request: Request) -> Principal:
    """Token, revocation, the enqueue rate limit and the role of one enqueue call."""
    principal = await caller(request)
    await over_limit(
        admin_state(request).produce_limiter,
        principal,
        "enqueue rate limit of {limit} calls per {window_s} s exceeded (TQ_ADMIN_PRODUCE_RATE_LIMIT)",
    )
    authorize_enqueue(principal)
    return principal


async def _producing(request: Request, _credentials: Credentials) -> Principal:
    principal: Principal = request.state.principal  # set by ProduceRoute before the body is read
    return principal


Producing = Annotated[Principal, Depends(_producing)]


class ProduceRoute(APIRoute):
    """Checks the caller before the body is parsed (so an invalid call is still rate-limited and
    counted), then counts the call's outcome for the audit summary."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        target = getattr(self.endpoint, _TARGET, None)  # (queue, job) of a registry job's route

        async def guarded(request: Request) -> Response:
            if target is not None:
                request.state.produce_target = target
            try:
                await produce_guard(request)
                response = await handler(request)
            except Exception as exc:
                await _audit(request, *failure(exc))
                raise
            await _audit(request, response.status_code, "")
            return response

        return guarded


async def _audit(request: Request, status: int, message: str) -> None:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None:  # no valid token: no actor, no row
        return
    state = admin_state(request)
    if status in REFUSALS:
        await refused(
            state,
            principal,
            audit_row(request, principal, produce_audit.ACTION, status, message, kind="change"),
        )
        return
    target: tuple[str, str] = getattr(request.state, "produce_target", None) or (
        str(request.path_params.get("queue", "")),
        str(request.path_params.get("job", "")),
    )
    created, duplicates = getattr(request.state, "produced", (0, 0))
    if created or duplicates:  # only after a job's own route: queue names from the registry, bounded
        metrics.ENQUEUED.labels(target[0], "created").inc(created)
        metrics.ENQUEUED.labels(target[0], "duplicate").inc(duplicates)
    outcome = "ok" if status < 400 else error_code(status)
    try:
        await produce_audit.count(state, principal, *target, outcome, created=created, duplicates=duplicates)
    except RedisError as exc:  # the call's answer stays its own; the count is what is lost
        log.error(
            "admin produce audit: call not counted (%s): %s %s/%s by %s",
            exc,
            outcome,
            *target,
            principal.subject,
        )


def _schema_name(queue: str, job: str) -> str:
    return "".join(p[:1].upper() + p[1:] for p in re.split(r"[^A-Za-z0-9]+", f"{queue} {job}") if p)


def _invalid(exc: InvalidPayload, where: str) -> ApiError:
    fields = [
        {"field": "header.Idempotency-Key" if f == "idempotency_key" else f"{where}.{f}", "message": m}
        for f, m in exc.errors
    ]
    return invalid(fields)


def _too_large(exc: PayloadTooLarge, index: int | None = None) -> ApiError:
    where = f"body.jobs.{index}.payload: " if index is not None else ""
    return ApiError(413, f"{where}{exc}")


def _oversized(payloads: Sequence[BaseModel], limit: int) -> int | None:
    """The index of the first payload over the engine's limit (to name it in the 413)."""
    return next((i for i, p in enumerate(payloads) if len(p.model_dump_json()) > limit), None)


def _add_job_routes(router: APIRouter, queue: str, job: str, model: type[BaseModel], batch_max: int) -> None:
    name = _schema_name(queue, job)
    item_model = create_model(
        f"{name}BatchItem",
        __config__=ConfigDict(extra="forbid"),
        payload=(model, Field(description=f"a {model.__name__}")),
        idempotency_key=(str | None, Field(None, min_length=1, max_length=256, description=_KEY_HELP)),
        delay_s=(float, Field(0.0, ge=0, le=MAX_DELAY_S, allow_inf_nan=False)),
    )
    batch_model = create_model(
        f"{name}Batch",
        __config__=ConfigDict(extra="forbid"),
        jobs=(list[item_model], Field(min_length=1, max_length=batch_max)),
    )
    path = f"/{queue}/{job}"
    doc = (model.__doc__ or "").strip()

    async def enqueue_one(
        request: Request,
        response: Response,
        payload: Annotated[model, Body(description=f"the {job} job's payload")],  # type: ignore[valid-type]
        _: Producing,
        idempotency_key: IdempotencyKey = None,
        delay_s: DelayQuery = 0.0,
    ) -> Enqueued:
        producer = admin_state(request).producer
        try:
            result = await producer.enqueue_detailed(
                queue, job, payload, idempotency_key=idempotency_key, delay=delay_s or None
            )
        except InvalidPayload as exc:
            raise _invalid(exc, "body") from None
        except PayloadTooLarge as exc:
            raise _too_large(exc) from None
        request.state.produced = (0, 1) if result.duplicate else (1, 0)
        if result.duplicate:
            response.status_code = 200
        return Enqueued(queue=queue, job=job, id=result.id, duplicate=result.duplicate)

    async def enqueue_batch(
        request: Request,
        response: Response,
        body: Annotated[batch_model, Body()],
        _: Producing,
        idempotency_key: IdempotencyKey = None,
    ) -> BatchEnqueued:
        state = admin_state(request)
        items: list[Any] = body.jobs  # type: ignore[attr-defined]
        requests = [
            JobRequest(
                job,
                item.payload,
                item.idempotency_key or (f"{idempotency_key}:{i}" if idempotency_key else None),
                item.delay_s or None,
            )
            for i, item in enumerate(items)
        ]
        try:
            results: list[EnqueueResult] = await state.producer.enqueue_many(queue, requests)
        except InvalidPayload as exc:
            raise _invalid(exc, "body.jobs") from None
        except PayloadTooLarge as exc:
            limit = state.settings.max_payload_bytes
            raise _too_large(exc, _oversized([i.payload for i in items], limit)) from None
        duplicates = sum(r.duplicate for r in results)
        request.state.produced = (len(results) - duplicates, duplicates)
        if duplicates == len(results):
            response.status_code = 200
        return BatchEnqueued(
            queue=queue,
            job=job,
            jobs=[EnqueuedItem(id=r.id, duplicate=r.duplicate) for r in results],
            created=len(results) - duplicates,
            duplicates=duplicates,
        )

    for endpoint in (enqueue_one, enqueue_batch):
        setattr(endpoint, _TARGET, (queue, job))
    held = "the idempotency key was held: nothing new was enqueued"
    router.add_api_route(
        path,
        enqueue_one,
        methods=["POST"],
        status_code=201,
        name=f"jobs.enqueue.{queue}.{job}",
        operation_id=f"enqueue{name}",
        summary=f"Enqueue one {queue} {job} job",
        description=doc,
        response_model=Enqueued,
        responses={200: {"model": Enqueued, "description": held}},
    )
    router.add_api_route(
        path + "/batch",
        enqueue_batch,
        methods=["POST"],
        status_code=201,
        name=f"jobs.enqueue_batch.{queue}.{job}",
        operation_id=f"enqueue{name}Batch",
        summary=f"Enqueue up to {batch_max} {queue} {job} jobs, all or nothing",
        description=doc,
        response_model=BatchEnqueued,
        responses={200: {"model": BatchEnqueued, "description": f"every item's {held[4:]}"}},
    )


async def unknown_job(request: Request, queue: str, job: str, _: Producing) -> None:
    """Any (queue, job) without a route of its own: 404 naming what the registry knows."""
    try:
        get_queue(queue).payload_model(job)
    except TqError as exc:
        raise from_tq_error(exc) from None
    raise ApiError(404, f"{queue} {job} was registered after the admin service started; restart it")


def router(admin: AdminSettings) -> APIRouter:
    """The enqueue routes of every (queue, job) the registry holds now."""
    built = APIRouter(prefix=PREFIX, route_class=ProduceRoute, tags=["produce"])
    for spec in all_queues():
        for job, model in spec.jobs.items():
            _add_job_routes(built, spec.name, job, model, admin.admin_produce_batch_max)
    for path in ("/{queue}/{job}", "/{queue}/{job}/batch"):
        built.add_api_route(path, unknown_job, methods=["POST"], include_in_schema=False)
    return built
