"""Revoked admin tokens, by token id (``jti``): ``tq token revoke``.

``key(token_id)``, ``tq:admin:revoked:<token id>``, is a string that exists while the token is
revoked; it expires when the token does (or, when only the id is known, after
``TQ_ADMIN_TOKEN_MAX_TTL_S``, the longest any token may live). ``deps`` checks it on every request
and the live streams (``realtime``) every ``CHECK_S`` seconds, closing the stream of a revoked token.
"""

from __future__ import annotations

import time
from typing import Any

CHECK_S = 2.0  # how often an open live stream looks whether its token was revoked


def key(token_id: str) -> str:
    """STRING (expiring): this admin token is revoked."""
    return f"tq:admin:revoked:{token_id}"


async def revoke(client: Any, token_id: str, expires_at: float) -> None:
    """Revoke a token until ``expires_at`` (epoch seconds; after it, the token is refused anyway)."""
    ttl_ms = max(1000, int((expires_at - time.time()) * 1000) + 1000)
    await client.set(key(token_id), str(int(time.time())), px=ttl_ms)


async def is_revoked(client: Any, token_id: str) -> bool:
    return bool(await client.exists(key(token_id)))
