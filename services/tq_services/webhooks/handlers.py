"""Handler of the webhooks family, registered on the process-wide ``tq.handlers.default_handlers``.

Importing this module registers it (``tq_services.load_handlers(["webhooks"])`` does it for
``tq worker`` / ``tq serve webhooks``). deliver-webhook POSTs
``{"id", "event", "data", "timestamp"}`` as JSON to the endpoint's URL, signed (see
``tq_services.webhooks.signing``), with the headers ``X-Tq-Delivery`` (the payload's delivery id,
else the job id: the same on every retry), ``X-Tq-Event``, ``X-Tq-Timestamp`` and
``X-Tq-Signature``.

2xx is delivered. 410 deactivates the endpoint and dead-letters; any other 4xx but 408/429, and
a redirect (never followed), dead-letter at once; a 429 with a Retry-After (seconds or an HTTP
date) is ``RateLimited``: the delivery goes back uncharged and the queue's intake pauses that long
on every replica; 408, 429 without Retry-After, 5xx, timeouts and connection errors retry with the
queue's backoff, or after the Retry-After of a 503; both waits are capped at the queue's backoff
max. A missing or inactive endpoint and an unsafe URL (SSRF) dead-letter.
Every attempt on an existing endpoint writes a WebhookDeliveryLog row, committed before the
handler returns or raises.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from sqlalchemy import update
from tq.handlers import JobContext, default_handlers
from tq.payloads import DeliverWebhook
from tq.settings import get_settings

from tq_services.store import sessions
from tq_services.webhooks.delivery import Answer, check_url, post, retry_after_s
from tq_services.webhooks.errors import (
    DeliveryDeferred,
    DeliveryRateLimited,
    DeliveryRejected,
    EndpointUnavailable,
)
from tq_services.webhooks.models import WebhookDeliveryLog, WebhookEndpoint
from tq_services.webhooks.settings import get_webhook_settings
from tq_services.webhooks.signing import sign

log = logging.getLogger("tq.webhooks")

WEBHOOK_QUEUE = "webhooks:deliver"
ERROR_MAX = 2000


def _verdict(answer: Answer) -> Exception | None:
    """None for a delivery, else the exception that steers the job."""
    if 200 <= answer.status_code < 300:
        return None
    text = f"webhook receiver answered {answer.status_code}"
    if answer.status_code == 410:
        return DeliveryRejected(f"{text} (Gone): endpoint deactivated")
    if answer.status_code in (408, 429) or answer.status_code >= 500:
        # 429 and 503 may say when to come back; the engine caps it at the queue's backoff max
        wait = retry_after_s(answer.retry_after) if answer.status_code in (429, 503) else None
        if answer.status_code == 429 and wait is not None:  # too many requests: slow the queue
            return DeliveryRateLimited(wait, text)
        return DeliveryDeferred(text, retry_after=wait)
    return DeliveryRejected(text)


@default_handlers.register(WEBHOOK_QUEUE, "deliver-webhook")
async def deliver_webhook(ctx: JobContext, payload: DeliverWebhook) -> dict[str, Any]:
    settings = get_settings()
    webhooks = get_webhook_settings()
    delivery_id = payload.delivery_id or ctx.job_id
    async with sessions(settings.database_url)() as session:
        async with session.begin():
            endpoint = await session.get(WebhookEndpoint, payload.endpoint_id)
        if endpoint is None:
            raise EndpointUnavailable(f"webhook endpoint {payload.endpoint_id} does not exist")
        endpoint_id, url, secret = endpoint.id, endpoint.url, endpoint.secret

        def attempt_log(outcome: str, answer: Answer | None, error: str | None) -> WebhookDeliveryLog:
            return WebhookDeliveryLog(
                endpoint_id=endpoint_id,
                delivery_id=delivery_id,
                event=payload.event,
                attempt=ctx.attempt,
                outcome=outcome,
                status_code=answer.status_code if answer else None,
                response_ms=answer.response_ms if answer else None,
                response_body=answer.body if answer else None,
                error=error[:ERROR_MAX] if error is not None else None,
                job_id=ctx.job_id,
                trace_id=ctx.trace_id,
            )

        answer: Answer | None = None
        try:
            if not endpoint.active:
                raise EndpointUnavailable(f"webhook endpoint {endpoint_id} is inactive")
            now = int(time.time())
            timestamp = str(now)
            body = json.dumps(
                {"id": delivery_id, "event": payload.event, "data": payload.data, "timestamp": now},
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode()
            headers = {
                "Content-Type": "application/json",
                "User-Agent": webhooks.webhook_user_agent,
                "X-Tq-Delivery": delivery_id,
                "X-Tq-Event": payload.event,
                "X-Tq-Timestamp": timestamp,
                "X-Tq-Signature": sign(secret, timestamp, body),
            }
            address = await check_url(url, webhooks.webhook_allow_private_networks)
            answer = await post(webhooks, url, body, headers, address)
            problem = _verdict(answer)
            if problem is not None:
                raise problem
        except Exception as exc:
            # a RateLimited delivery goes back uncharged: never its last attempt
            final = ctx.is_last_failure(exc)
            async with session.begin():
                session.add(attempt_log("failed" if final else "retrying", answer, str(exc)))
                if answer is not None and answer.status_code == 410:
                    await session.execute(
                        update(WebhookEndpoint).where(WebhookEndpoint.id == endpoint_id).values(active=False)
                    )
            log.warning(
                "webhook %s (%s) to endpoint %s %s (attempt %d): %s",
                delivery_id,
                payload.event,
                endpoint_id,
                "failed" if final else "deferred",
                ctx.attempt,
                exc,
            )
            raise
        async with session.begin():
            session.add(attempt_log("delivered", answer, None))
    log.info(
        "webhook %s (%s) delivered to endpoint %s: %d in %.0f ms",
        delivery_id,
        payload.event,
        endpoint_id,
        answer.status_code,
        answer.response_ms,
    )
    return {
        "delivery_id": delivery_id,
        "endpoint_id": endpoint_id,
        "status_code": answer.status_code,
        "response_ms": answer.response_ms,
    }
