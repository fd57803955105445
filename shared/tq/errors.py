"""Exceptions tq raises to callers, and the ones a handler raises to steer delivery."""

from __future__ import annotations

from collections.abc import Sequence


class TqError(Exception):
    """Base of every tq error."""


class UnknownQueue(TqError, LookupError):
    def __init__(self, queue: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown queue {queue!r}; known: {', '.join(known)}")
        self.queue = queue


class UnknownJob(TqError, LookupError):
    def __init__(self, queue: str, job: str, known: Sequence[str]) -> None:
        super().__init__(f"unknown job {job!r} on queue {queue!r}; known: {', '.join(known)}")
        self.queue = queue
        self.job = job


class InvalidPayload(TqError, ValueError):
    """The payload does not match the job's model. ``errors`` holds ``(field, reason)`` pairs."""

    def __init__(self, queue: str, job: str, errors: Sequence[tuple[str, str]]) -> None:
        detail = "; ".join(f"{field}: {reason}" for field, reason in errors)
        super().__init__(f"invalid payload for {queue} {job}: {detail}")
        self.queue = queue
        self.job = job
        self.errors = list(errors)


class PayloadTooLarge(TqError, ValueError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"payload is {size} bytes; the limit is {limit} (TQ_MAX_PAYLOAD_BYTES)")


class NotFound(TqError, LookupError):
    pass


class ConfirmationRequired(TqError, ValueError):
    pass


class NonRetryableError(TqError):
    """Raise from a handler to send the job straight to the DLQ, without further attempts."""


class RetryLater(TqError):
    """Raise from a handler to retry after ``retry_after`` seconds (e.g. a peer's Retry-After)
    instead of the queue's backoff. The attempt still counts, and the delay is capped at the
    queue's backoff ``max_s``; ``retry_after=None`` means the usual backoff."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(TqError):
    """Raise from a handler when the service it calls answered "too many requests" (HTTP 429 with
    ``Retry-After``): the job goes back to the stream with no attempt charged (it keeps its attempt
    number and failure history), and the queue's intake pauses for ``retry_after`` seconds on every
    replica (capped at the queue's backoff ``max_s``), as BullMQ's ``Worker.rateLimit`` does. Raise
    ``RetryLater`` instead to retry only this job, charged."""

    def __init__(self, retry_after: float, message: str = "") -> None:
        super().__init__(message or f"rate limited: retry after {retry_after:g}s")
        self.retry_after = retry_after


class JobTimeout(TqError):
    """The attempt ran past the job's time limit (``timeout_s``): the job was cancelled, and the
    attempt fails like any other (retried per the queue's policy, dead-lettered after the last)."""


class NoHandler(NonRetryableError):
    """The queue has no handler for this job name (yet): the job waits in the DLQ for replay."""
