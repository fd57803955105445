"""How AI failures steer a job: a refusal or bad input dead-letters, anything temporary retries."""

from __future__ import annotations

from tq.errors import NonRetryableError, RateLimited, RetryLater, TqError


class LlmNotConfigured(NonRetryableError):
    """No provider is configured (``TQ_LLM_BASE_URL`` unset): the job waits in the DLQ for replay."""


class LlmRejected(NonRetryableError):
    """The provider refused the request for good (400 bad request, 401/403 key refused, 404 unknown
    model, ...): retrying the same request would fail the same way."""


class LlmUnavailable(RetryLater):
    """A temporary provider failure (429 without Retry-After, 5xx, timeout, connection error, a
    garbled answer): retried
    after the provider's ``Retry-After`` when it sent one (capped by the queue), else with backoff."""


class LlmRateLimited(RateLimited):
    """The provider answered 429 with a ``Retry-After``: its requests-per-minute quota is spent for
    everyone, not only this request. The job goes back uncharged and the queue's intake pauses that
    long on every replica (``tq.errors.RateLimited``); a 429 without ``Retry-After`` is
    ``LlmUnavailable``."""


class MalformedAnswer(TqError):
    """The model's answer is not the JSON the job asked for: retried (a model answers differently
    each time); the raw answer is kept in AiEventLog."""

    def __init__(self, message: str, raw: str) -> None:
        super().__init__(message)
        self.raw = raw


class ArticleNotFound(NonRetryableError):
    """The job names an article that does not exist."""


class InvalidRequest(NonRetryableError):
    """The payload cannot be acted on (e.g. the section to rewrite is not in the article)."""
