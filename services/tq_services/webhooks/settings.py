"""The webhooks family's settings: deliver-webhook (``TQ_WEBHOOK_*``)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, PositiveFloat
from tq.settings import TqSettings


class WebhookSettings(TqSettings):
    webhook_timeout_s: PositiveFloat = Field(
        10.0, description="a webhook delivery's whole-request timeout (connect, write, read and pool)"
    )
    webhook_max_response_bytes: int = Field(
        2048, ge=0, le=1_000_000, description="most bytes of a receiver's answer read and kept in the log"
    )
    webhook_allow_private_networks: bool = Field(
        False,
        description="allow webhook URLs that resolve to loopback, private or link-local (metadata) "
        "addresses (SSRF guard off)",
    )
    webhook_user_agent: str = Field("tq-webhooks/1", description="the User-Agent of deliveries")


@lru_cache(maxsize=1)
def get_webhook_settings() -> WebhookSettings:
    return WebhookSettings()
