"""Handlers: ``async def handler(ctx: JobContext, payload: Model) -> result``, registered per queue
and job name. A handler raises to fail the attempt (retried with backoff) or raises
``NonRetryableError`` to dead-letter at once; it never swallows an error to look green."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from tq import keys
from tq.envelope import EVENT_DATA_MODELS, Envelope, Event, EventType
from tq.progress import ProgressReporter
from tq.registry import get_queue
from tq.retry import is_last_failure
from tq.scripts import Scripts

Handler = Callable[["JobContext", Any], Awaitable[Any]]


class JobContext:
    """What a handler gets beside its payload. ``envelope`` is built when first read: the worker
    checks a fresh job's payload without one, and most handlers need only ``job_id``."""

    __slots__ = (
        "_envelope",
        "attempt",
        "cancel_requested",
        "consumer_id",
        "events",
        "job_id",
        "max_attempts",
        "name",
        "queue",
        "redis",
        "reporter",
        "scripts",
        "trace_id",
    )

    def __init__(
        self,
        envelope: Envelope | Callable[[], Envelope],
        job_id: str,
        queue: str,
        name: str,
        trace_id: str | None,
        attempt: int,
        max_attempts: int,
        consumer_id: str,
        redis: Any,
        scripts: Scripts | None = None,
        events: bool = True,
    ) -> None:
        self._envelope = envelope  # or what builds it
        self.job_id = job_id
        self.queue = queue
        self.name = name
        self.trace_id = trace_id
        self.attempt = attempt
        self.max_attempts = max_attempts
        self.consumer_id = consumer_id
        self.redis = redis
        self.scripts = scripts  # the worker's: progress() uses its script
        self.events = events  # the worker's TQ_EVENTS: progress() publishes job.progress only when on
        self.reporter: ProgressReporter | None = None  # made at the first progress()
        # set before the worker cancels the handler for a cancel request (tq.cancel): a CancelledError
        # then means "cancelled for good", not the worker stopping (which runs the job again)
        self.cancel_requested = False

    def __repr__(self) -> str:
        job = f"job_id={self.job_id!r}, queue={self.queue!r}, name={self.name!r}"
        return f"JobContext({job}, attempt={self.attempt})"

    def load_envelope(self) -> Envelope:
        """The envelope, built at the first call (``envelope``; what the tracer is given)."""
        env = self._envelope
        if callable(env):
            env = self._envelope = env()
        return env

    envelope = property(load_envelope)

    def is_last_failure(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised out of the handler now, ends the job (no retry follows): for a
        handler that records its own failure, as final or as "will retry"."""
        return is_last_failure(exc, self.attempt, self.max_attempts)

    async def progress(self, fraction: float, message: str | None = None) -> None:
        """Report how far the job is (``fraction`` 0-1) and what it does now: written to its record
        and published as ``job.progress``, throttled per job (``tq.progress``); the last report is
        always written. A fraction outside 0-1 raises ``ValueError``."""
        if self.reporter is None:
            script = self.scripts.progress if self.scripts is not None else None
            self.reporter = ProgressReporter(
                self.redis, self.queue, self.job_id, self.name, self.events, script
            )
        await self.reporter.report(fraction, message)

    async def publish(self, kind: EventType, **data: Any) -> None:
        """Publish a progress event for this job on ``tq:events``. Kinds with a data model
        (``EVENT_DATA_MODELS``) are validated against it: a malformed event is a bug, raised here."""
        model = EVENT_DATA_MODELS.get(kind)
        if model is not None:
            data = model.model_validate(data).model_dump(exclude_none=True)
        event = Event.model_construct(
            type=kind,
            queue=self.queue,
            job_id=self.job_id,
            name=self.name,
            at=time.time(),
            data=data,
        )
        await self.redis.publish(keys.EVENTS_CHANNEL, event.model_dump_json())


class HandlerRegistry:
    def __init__(self) -> None:
        self._handlers: dict[tuple[str, str], Handler] = {}

    def register(self, queue: str, job: str) -> Callable[[Handler], Handler]:
        get_queue(queue).payload_model(job)  # unknown queue or job: fail at import, not at run time

        def deco(fn: Handler) -> Handler:
            self._handlers[(queue, job)] = fn
            return fn

        return deco

    def add(self, queue: str, job: str, fn: Handler) -> None:
        self.register(queue, job)(fn)

    def get(self, queue: str, job: str) -> Handler | None:
        return self._handlers.get((queue, job))

    def __contains__(self, item: tuple[str, str]) -> bool:
        return item in self._handlers


default_handlers = HandlerRegistry()
"""The process-wide registry that the family services register into."""
