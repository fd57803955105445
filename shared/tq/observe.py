"""The worker's observation hook: what a metrics exporter (``tq_services.metrics``) sees of each
settled batch, without the engine depending on any metrics library.

An observer may also have ``task_restarted(task, reason)`` (``TaskObserver``): the worker's
supervisor (``tq.supervise``) calls it on each failure of a long-lived task, ``task`` one of
``tq.supervise.TASKS`` and ``reason`` one of ``tq.supervise.REASONS``; and
``loop_blocked(queue, job)`` (``LoopObserver``), from the loop-lag watchdog's thread; and
``rate_waited`` / ``job_rate_limited`` (``RateObserver``), from a queue's intake and a slot.

A ``Worker(observer=...)`` calls ``observer.observe(queue, ops)`` once per settle call, after the
batch's outcome is committed to Redis, in the event loop (no thread hop). ``ops`` are the batch's
settle operations; an observer must be cheap (it runs on the hot path: aggregate per batch, never
call Redis) and must not keep references to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

# Settled.kind: the outcome of one job in a batch.
COMPLETED = "c"
RETRIED = "r"  # failed an attempt, scheduled for another (delayed ZSET)
DEAD = "d"  # dead-lettered
SKIPPED = "s"  # idempotency key already completed by another job: acked without running
RELEASED = "q"  # fetched but never started (shutdown or pause): given back, no attempt charged
CANCELLED = "x"  # cancelled while running, or fetched and cancelled before its start (tq.cancel)

# Why a queue's intake waited at its rate limit (tq.ratelimit): no permit left in the window across
# replicas, or a pause a handler asked with RateLimited.
RATE_WAIT_REASONS = ("limit", "paused")

# Error types that mean the entry itself is bad input: it can never succeed as it is, so it went to
# the DLQ without running a handler. These count as outcome ``invalid``; every other dead-letter
# (the handler's own errors, NonRetryableError, StalledJob, and NoHandler, a deployment gap that a
# replay after deploying the handler fixes) is ``dead_lettered``.
INVALID_ERRORS = frozenset({"InvalidEnvelope", "WrongQueue", "UnknownJob", "InvalidPayload"})


class Settled(Protocol):
    """What an observer may read of one settled job (``tq.worker._Op`` provides it)."""

    @property
    def kind(self) -> str:
        """One of COMPLETED, RETRIED, DEAD, SKIPPED, RELEASED, CANCELLED."""
        ...

    @property
    def name(self) -> str:
        """The job name as the entry gave it (unbounded for forged entries: check the registry)."""
        ...

    @property
    def attempt(self) -> int: ...

    @property
    def duration_ms(self) -> float:
        """Handler run time (0 for jobs that did not run)."""
        ...

    @property
    def ready_at(self) -> float:
        """Epoch seconds the job became due: ``enqueued_at``, or ``not_before`` for a delayed
        enqueue; 0 when unknown (unreadable entries, released ones)."""
        ...

    @property
    def started(self) -> float:
        """Epoch seconds this attempt started (or was reclaimed)."""
        ...

    @property
    def invalid(self) -> bool:
        """A dead-letter for bad input (one of INVALID_ERRORS)."""
        ...

    @property
    def reclaimed(self) -> bool:
        """Settled by the reclaimer: its consumer stopped responding; it did not run here."""
        ...


class Observer(Protocol):
    def observe(self, queue: str, ops: Sequence[Settled]) -> None: ...


class TaskObserver(Protocol):
    """Optional on an observer: one failure of a supervised task (then retried with backoff)."""

    def task_restarted(self, task: str, reason: str) -> None: ...


class LoopObserver(Protocol):
    """Optional on an observer: the event loop was blocked past the watchdog's threshold
    (``tq.loopwatch``) by a job of ``queue`` named ``job`` (``_none``: outside any job). Called
    from the watchdog's thread."""

    def loop_blocked(self, queue: str, job: str) -> None: ...


class RateObserver(Protocol):
    """Optional on an observer: the rate limit at work (``tq.ratelimit``)."""

    def rate_waited(self, queue: str, reason: str, seconds: float, new: bool) -> None:
        """The intake waited ``seconds`` at the limit, ``reason`` one of RATE_WAIT_REASONS; ``new``:
        the first round of a wait (the one before read, or waited for another reason)."""
        ...

    def job_rate_limited(self, queue: str, job: str) -> None:
        """A handler raised ``RateLimited``: its job went back to the stream, uncharged."""
        ...
