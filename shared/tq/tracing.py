"""OpenTelemetry spans of the engine: a PRODUCER span per enqueue call, a CONSUMER span per run.

Only the OpenTelemetry *API* is imported here: until an SDK ``TracerProvider`` is installed (by
``tq_services.tracing`` from the ``OTEL_*`` variables, or by the application) ``tracer()`` is None
and the producer and the worker skip everything else: no span, no context, and the stream entry
gets no ``tr`` field that the caller did not ask for.

The producer writes its span's W3C ``traceparent`` (``00-<trace id>-<span id>-<flags>``) into the
envelope's ``trace_id`` (stream entry field ``tr``); the worker continues that trace for the run.
An older entry whose ``tr`` is a plain correlation id starts a new trace that names it.
"""

from __future__ import annotations

import contextlib
import os
import re
from types import TracebackType
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    NoOpTracerProvider,
    ProxyTracerProvider,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

from tq.errors import RateLimited
from tq.retry import is_last_failure

if TYPE_CHECKING:
    from collections.abc import Callable

    from tq.envelope import Envelope

SYSTEM = "tq"  # messaging.system
_OFF_PROVIDERS = (ProxyTracerProvider, NoOpTracerProvider)  # no SDK installed: tracing is off
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_cached: tuple[object, Tracer] | None = None
# The cheap check reads the API's global provider slot (None until one is set) instead of calling
# get_tracer_provider(), which looks up os.environ on every call (~0.7 us, measured: more than the
# rest of a single enqueue's Python work). The API version is pinned; without the slot, or with a
# provider named by OTEL_PYTHON_TRACER_PROVIDER (loaded lazily by the API), the public call is used.
_FAST_SLOT = hasattr(trace, "_TRACER_PROVIDER") and "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ
NO_SPAN = contextlib.nullcontext()  # what job_span gives with tracing off: shared, nothing allocated


class Outcome:
    """Values of ``tq.job.outcome`` on a run's span."""

    COMPLETED = "completed"
    RETRY = "retry"  # failed; another attempt follows
    DEAD = "dead"  # failed for good: dead-lettered
    RATE_LIMITED = "rate_limited"  # RateLimited: back to the stream, uncharged
    INTERRUPTED = "interrupted"  # cancelled (the process stopping): the entry is given back


def tracer() -> Tracer | None:
    """The engine's tracer, or None while no SDK tracer provider is installed (the cheap check of
    the hot paths: a global read and a class test)."""
    global _cached
    provider = trace._TRACER_PROVIDER if _FAST_SLOT else trace.get_tracer_provider()
    if provider is None or isinstance(provider, _OFF_PROVIDERS):
        return None
    cached = _cached
    if cached is None or cached[0] is not provider:
        cached = _cached = (provider, provider.get_tracer("tq"))
    return cached[1]


def traceparent(span: trace.Span) -> str:
    ctx = span.get_span_context()
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parent_context(value: str | None) -> otel_context.Context | None:
    """The remote parent a ``traceparent`` names, or None (a plain id, nothing, or malformed)."""
    match = _TRACEPARENT.fullmatch(value) if value else None
    if match is None:
        return None
    trace_id, span_id = int(match[1], 16), int(match[2], 16)
    if not trace_id or not span_id:
        return None
    remote = SpanContext(trace_id, span_id, is_remote=True, trace_flags=TraceFlags(int(match[3], 16)))
    return trace.set_span_in_context(NonRecordingSpan(remote))


class Publish:
    """The PRODUCER span of one enqueue call (one job, or one bulk call); ``traceparent`` is what
    every job of the call carries. A ``trace_id`` the caller passed that is a traceparent becomes
    the parent when no span is current (a producer in another process or language)."""

    __slots__ = ("span", "traceparent")

    def __init__(self, tracer_: Tracer, queue: str, job: str | None, count: int, caller_trace: str | None):
        parent = None
        if not trace.get_current_span().get_span_context().is_valid:
            parent = parent_context(caller_trace)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": queue,
            "messaging.operation": "publish",
        }
        if job is not None:
            attributes["tq.job.name"] = job
        if count != 1:
            attributes["messaging.batch.message_count"] = count
        elif caller_trace and parent is None and not caller_trace.startswith("00-"):
            attributes["tq.trace_id"] = caller_trace  # a plain correlation id the caller passed
        self.span = tracer_.start_span(
            f"publish {queue}", context=parent, kind=SpanKind.PRODUCER, attributes=attributes
        )
        self.traceparent = traceparent(self.span)

    def __enter__(self) -> Publish:
        return self

    def sent(self, job_id: str) -> None:
        self.span.set_attribute("messaging.message.id", job_id)

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self.span.record_exception(exc)
            self.span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        self.span.end()


def publish(queue: str, job: str | None, count: int, caller_trace: str | None) -> Publish | None:
    """A PRODUCER span for an enqueue call, or None with tracing off."""
    tracer_ = tracer()
    return None if tracer_ is None else Publish(tracer_, queue, job, count, caller_trace)


class _JobRun:
    """The CONSUMER span of one run of a job, current while the handler runs (so the handler's
    httpx, SQLAlchemy and SMTP calls are its children); the outcome is read from how it ends."""

    __slots__ = ("attempt", "max_attempts", "span", "token")

    def __init__(self, tracer_: Tracer, queue: str, env: Envelope, attempt: int, max_attempts: int):
        self.attempt, self.max_attempts = attempt, max_attempts
        parent = parent_context(env.trace_id)
        attributes: dict[str, Any] = {
            "messaging.system": SYSTEM,
            "messaging.destination.name": queue,
            "messaging.operation": "process",
            "messaging.message.id": env.id,
            "tq.job.name": env.name,
            "tq.job.attempt": attempt,
            "tq.job.max_attempts": max_attempts,
        }
        if parent is None and env.trace_id:  # an entry written before traceparents, or by hand
            attributes["tq.trace_id"] = env.trace_id
        self.span = tracer_.start_span(
            f"process {queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        self.token: object = None

    def __enter__(self) -> trace.Span:
        self.token = otel_context.attach(trace.set_span_in_context(self.span))
        return self.span

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = self.span
        try:
            if exc is None:
                span.set_attribute("tq.job.outcome", Outcome.COMPLETED)
            elif isinstance(exc, RateLimited):
                span.set_attribute("tq.job.outcome", Outcome.RATE_LIMITED)
            elif not isinstance(exc, Exception):
                span.set_attribute("tq.job.outcome", Outcome.INTERRUPTED)
            else:
                dead = is_last_failure(exc, self.attempt, self.max_attempts)
                span.set_attribute("tq.job.outcome", Outcome.DEAD if dead else Outcome.RETRY)
                span.record_exception(exc)
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
        finally:
            otel_context.detach(self.token)  # type: ignore[arg-type]
            span.end()


def job_span(queue: str, env: Envelope | Callable[[], Envelope], attempt: int, max_attempts: int) -> Any:
    """Wrap a handler's run: the CONSUMER span with tracing on, the shared no-op otherwise.
    ``env``: the job's envelope, or what builds it (the worker builds one only when it is read)."""
    tracer_ = tracer()
    if tracer_ is None:
        return NO_SPAN
    return _JobRun(tracer_, queue, env() if callable(env) else env, attempt, max_attempts)


def client_span(name: str, attributes: dict[str, Any]) -> Any:
    """A CLIENT span for a call no instrumentation covers (SMTP), or the no-op with tracing off."""
    tracer_ = tracer()
    if tracer_ is None:
        return NO_SPAN
    return tracer_.start_as_current_span(name, kind=SpanKind.CLIENT, attributes=attributes)
