"""The owner's admin service (``tq serve admin``): the HTTP API over queues, jobs and dead letters,
live events over SSE and WebSocket. Not a family: it runs no consumers. See docs/admin.md."""

from tq_services.admin.api import create_app, serve

__all__ = ["create_app", "serve"]
