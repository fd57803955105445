"""How messaging failures steer delivery: rejections dead-letter, deferrals retry."""

from __future__ import annotations

from tq.errors import NonRetryableError, TqError


class TemplateProblem(NonRetryableError):
    """Unknown template, missing variable or broken template: retrying cannot help."""


class DeliveryRejected(NonRetryableError):
    """A permanent refusal (SMTP 5xx, SMS provider 4xx): dead-lettered without retry."""


class DeliveryDeferred(TqError):
    """A temporary failure (SMTP 4xx, connection error, timeout, SMS provider 5xx): retried."""


class CoolDown(NonRetryableError):
    """A one-time code for the same user and purpose was requested too recently."""
