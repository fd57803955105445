"""The analytics family's settings: the dashboards precomputed by snapshot-dashboard and
snapshot-realtime (``TQ_ANALYTICS_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from tq.settings import TqSettings


class AnalyticsSettings(TqSettings):
    analytics_dashboard_days: int = Field(
        7, ge=1, le=366, description="days a snapshot-dashboard payload covers, today included"
    )
    analytics_top_n: int = Field(
        10, ge=1, le=1000, description="rows in a dashboard's top lists (articles, queries)"
    )


@lru_cache(maxsize=1)
def get_analytics_settings() -> AnalyticsSettings:
    return AnalyticsSettings()
