"""Signing webhook deliveries, and verifying them on the receiving side.

The signature is ``X-Tq-Signature: sha256=<hex>``, the HMAC-SHA256 with the endpoint's secret of
``"<X-Tq-Timestamp>.<raw body>"``. A receiver checks it over the raw bytes it got, before parsing,
and should refuse old timestamps (``tolerance_s``) to stop replays; ``X-Tq-Delivery`` is the same
on every retry of one delivery, so a receiver dedupes on it.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SCHEME = "sha256="


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def sign(secret: str | bytes, timestamp: str | int, body: str | bytes) -> str:
    """The ``X-Tq-Signature`` header value for ``body`` sent at ``timestamp``."""
    message = f"{timestamp}.".encode() + _bytes(body)
    return SCHEME + hmac.new(_bytes(secret), message, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes,
    timestamp: str | int,
    body: str | bytes,
    header: str | None,
    *,
    tolerance_s: float | None = None,
    now: float | None = None,
) -> bool:
    """Whether ``header`` (``X-Tq-Signature``) signs ``body`` at ``timestamp`` (``X-Tq-Timestamp``)
    with ``secret``, compared in constant time. With ``tolerance_s``, a timestamp further than that
    from ``now`` (default: the clock) fails too."""
    if not header or not header.startswith(SCHEME):
        return False
    if tolerance_s is not None:
        try:
            sent = int(timestamp)
        except (TypeError, ValueError):
            return False
        if abs((time.time() if now is None else now) - sent) > tolerance_s:
            return False
    return hmac.compare_digest(sign(secret, timestamp, body), header)
