"""Backoff: ``initial * 2**(attempt-1)``, +/- ``jitter`` of it, never above ``max``; and whether a
failed attempt was the job's last."""

from __future__ import annotations

import random

from tq.errors import NonRetryableError, RateLimited, RetryLater
from tq.queue_config import RetryPolicy


def backoff_s(policy: RetryPolicy, attempt: int, rand: random.Random | None = None) -> float:
    """Delay before the attempt after ``attempt`` (1-based) failed."""
    base = min(policy.initial_s * 2 ** (attempt - 1), policy.max_s)
    if not policy.jitter:
        return base
    r = (rand or random).uniform(-policy.jitter, policy.jitter)
    return min(max(0.0, base * (1 + r)), policy.max_s)


def retry_delay_s(policy: RetryPolicy, attempt: int, exc: BaseException) -> float:
    """Delay before the next attempt: the one a ``RetryLater`` asks for (capped at ``max_s``), else
    ``backoff_s``."""
    asked = exc.retry_after if isinstance(exc, RetryLater) else None
    if asked is not None:
        return min(max(0.0, asked), policy.max_s)
    return backoff_s(policy, attempt)


def is_last_failure(exc: BaseException, attempt: int, max_attempts: int) -> bool:
    """Whether this failure ends the job (dead-lettered, no retry follows): a ``NonRetryableError``
    or the last attempt failing. ``RateLimited`` never does (the job goes back uncharged)."""
    if isinstance(exc, RateLimited):
        return False
    return isinstance(exc, NonRetryableError) or attempt >= max_attempts
