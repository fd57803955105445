"""How analytics jobs fail: bad input dead-letters with its reason (retrying cannot fix it)."""

from __future__ import annotations

from tq.errors import NonRetryableError


class InvalidAnalyticsRequest(NonRetryableError):
    """The payload is well-formed but asks for something impossible: a window that ends before it
    starts, a range too long to recompute in one job, an unknown dashboard."""
