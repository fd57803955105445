"""Switch OpenTelemetry tracing on from the standard ``OTEL_*`` variables (docs/engine.md, "Tracing").

Off by default. ``setup_from_env()`` installs the SDK's ``TracerProvider`` (service name and
resource from ``OTEL_SERVICE_NAME`` / ``OTEL_RESOURCE_ATTRIBUTES``, sampler from
``OTEL_TRACES_SAMPLER``) with a batch processor and the exporter ``OTEL_TRACES_EXPORTER`` names
(``otlp``: OTLP over HTTP/protobuf to ``OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT``; ``console``), and
instruments httpx and SQLAlchemy, when

- ``OTEL_TRACES_EXPORTER`` is set to anything but ``none``, or
- ``OTEL_SDK_DISABLED=false`` and an OTLP endpoint is set (the exporter is then ``otlp``);

``OTEL_SDK_DISABLED=true`` wins over both. The engine (``tq.tracing``) only sees that a provider
is installed. Called by the CLI (the composition root) before anything opens a connection.
"""

from __future__ import annotations

import atexit
import logging
import os
from collections.abc import Mapping

log = logging.getLogger("tq.tracing")

EXPORTERS = ("otlp", "console")
_installed = False


class TracingConfigError(ValueError):
    pass


def exporter_asked(env: Mapping[str, str] | None = None) -> str | None:
    """The exporter the environment asks for, or None (tracing stays off)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    name = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if name:
        if name == "none":
            return None
        if name not in EXPORTERS:
            raise TracingConfigError(
                f"OTEL_TRACES_EXPORTER={name!r} is not supported; use one of {', '.join(EXPORTERS)} or none"
            )
        return name
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "false" and endpoint:
        return "otlp"
    return None


def setup_from_env(env: Mapping[str, str] | None = None) -> bool:
    """Install the SDK tracer provider and the instrumentations if the environment asks; True if
    tracing is on. Idempotent within a process."""
    global _installed
    exporter_name = exporter_asked(env)
    if exporter_name is None or _installed:
        return _installed
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

    exporter: SpanExporter
    if exporter_name == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()  # endpoint, headers, timeout, compression: OTEL_EXPORTER_OTLP_*
    else:
        exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create())  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    provider.add_span_processor(BatchSpanProcessor(exporter))  # OTEL_BSP_*
    trace.set_tracer_provider(provider)
    atexit.register(provider.shutdown)  # the last batch goes out when the process ends
    HTTPXClientInstrumentor().instrument()  # every httpx client: webhooks, the LLM client, SMS, media
    # engines made from now on (tq.db.make_engine). Its declared range stops below SQLAlchemy 2.1,
    # which it instruments all the same (tested: tests/engine/test_tracing.py)
    SQLAlchemyInstrumentor().instrument(skip_dep_check=True)
    _installed = True
    log.info("tracing on: %s exporter", exporter_name)
    return True
