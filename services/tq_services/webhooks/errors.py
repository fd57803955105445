"""How webhook failures steer delivery: refusals and rejections dead-letter, deferrals retry."""

from __future__ import annotations

from tq.errors import NonRetryableError, RateLimited, RetryLater


class EndpointUnavailable(NonRetryableError):
    """The endpoint does not exist or is inactive (a 410 deactivates it)."""


class UnsafeUrl(NonRetryableError):
    """The URL is not http(s), or resolves to a loopback, private, link-local (metadata) or other
    non-public address while ``webhook_allow_private_networks`` is off (SSRF protection)."""


class DeliveryRejected(NonRetryableError):
    """The receiver answered a permanent failure (4xx but 408/429, a redirect): not retried."""


class DeliveryDeferred(RetryLater):
    """A temporary failure (408, 429 without Retry-After, 5xx, timeout, connection error): retried
    with backoff, or after the receiver's Retry-After (``retry_after`` seconds) when a 503 sends one."""


class DeliveryRateLimited(RateLimited):
    """The receiver answered 429 with a Retry-After: the delivery goes back uncharged and the
    webhooks queue's intake pauses that long on every replica (``tq.errors.RateLimited``), capped
    at the queue's backoff ``max_s``."""
