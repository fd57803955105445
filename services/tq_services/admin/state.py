"""What every request of the admin service shares, built once by the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import HTTPConnection
from tq.producer import Producer
from tq.settings import Settings

from tq_services.admin.hub import Hub
from tq_services.admin.ratelimit import SlidingWindow
from tq_services.admin.settings import AdminSettings


@dataclass
class AdminState:
    settings: Settings
    admin_settings: AdminSettings
    redis: Any
    engine: AsyncEngine
    limiter: SlidingWindow
    hub: Hub
    produce_limiter: SlidingWindow  # enqueue calls: a budget of their own (``produce``)
    producer: Producer  # the engine's producer, for ``produce``


def admin_state(conn: HTTPConnection) -> AdminState:
    state: AdminState = conn.app.state.admin
    return state
