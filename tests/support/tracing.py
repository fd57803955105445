"""Tracing switched on inside the test process, with the SDK's in-memory exporter.

OpenTelemetry lets a process set its global tracer provider once; the tests put it back (as the
OpenTelemetry project's own tests do) so that every other test runs with tracing off."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once


def _reset_global_provider() -> None:
    trace._TRACER_PROVIDER = None  # no public reset exists
    trace._TRACER_PROVIDER_SET_ONCE = Once()


@contextmanager
def in_memory_tracing() -> Iterator[InMemorySpanExporter]:
    """A global SDK provider exporting to memory, with httpx and SQLAlchemy instrumented."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    _reset_global_provider()
    trace.set_tracer_provider(provider)
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    SQLAlchemyInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    try:
        yield exporter
    finally:
        SQLAlchemyInstrumentor().uninstrument()
        HTTPXClientInstrumentor().uninstrument()
        provider.shutdown()
        _reset_global_provider()
