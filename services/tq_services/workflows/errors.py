"""How workflow failures steer the run-workflow job: a broken definition or a failed instance
dead-letters; a busy instance (another run holds its lease) retries later."""

from __future__ import annotations

from tq.errors import NonRetryableError, TqError


class WorkflowUnavailable(NonRetryableError):
    """The definition or instance does not exist, is disabled, or does not match the payload."""


class InvalidWorkflow(NonRetryableError):
    """The definition's steps do not validate (unknown step type, queue or job, bad config)."""


class WorkflowFailed(NonRetryableError):
    """A step used up its retries (or failed for good): the instance is failed. The message names
    the failing step, so the DLQ record says where the workflow stopped."""


class InstanceBusy(TqError):
    """Another run holds this instance's lease (a continuation racing a reclaimed job): retried."""


class StepError(TqError):
    """One attempt of a step failed; the step's retry policy decides whether it runs again."""


class StepFailedForGood(TqError):
    """A step failed in a way no retry can change (a false condition with ``on_false: fail``, an
    invalid child payload): the instance fails at once."""
