"""Backoff: ``initial * 2**(attempt-1)``, +/- ``jitter`` of it, never above ``max``."""

from __future__ import annotations

import random

from tq.settings import RetryPolicy


def backoff_s(policy: RetryPolicy, attempt: int, rand: random.Random | None = None) -> float:
    """Delay before the attempt after ``attempt`` (1-based) failed."""
    base = min(policy.initial_s * 2 ** (attempt - 1), policy.max_s)
    if not policy.jitter:
        return base
    r = (rand or random).uniform(-policy.jitter, policy.jitter)
    return min(max(0.0, base * (1 + r)), policy.max_s)
