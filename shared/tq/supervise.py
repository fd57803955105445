"""Supervision of a worker process's long-lived tasks: one helper for all of them.

Every long-lived task of a worker (a reader, settler and slots per queue; the promoter, reclaimer,
touch, config poll, heartbeat and control listener of ``tq.worker.Worker``; the stats duty and
audit writer of ``tq.worker_app.WorkerApp``) runs under a ``Supervisor``:

* ``run(unit, task, body)`` runs a loop and, when it raises, records the failure and runs it
  again after a capped backoff; ``every(unit, task, interval, fn)`` is the same for a periodic
  duty (a failed tick is retried after the backoff, or the interval when longer);
* a failure is logged once per outage of a unit (again only when its reason changes), with the
  reason, and ``recovered(unit)`` logs the end of the outage and resets the backoff;
* each failure is counted by ``(task, reason)`` (``restarts``) and reported to ``on_restart``
  (the observer hook: ``tq_worker_task_restarts_total`` in ``tq_services.metrics``);
* ``down`` maps each unit failing right now to its reason: ``Worker.intake_problem`` reads it
  for the family service's ``/readyz``.

``task`` is one of ``TASKS`` and the reason one of ``REASONS``: metric labels stay bounded.
A unit names one instance (``reader:email:send``); nothing is done per job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("tq.supervise")

TASKS = (
    "reader",
    "slot",
    "settler",
    "promoter",
    "reclaimer",
    "touch",
    "cancels",  # the poll of cancel markers (tq.cancel)
    "config",
    "heartbeat",
    "control",
    "stats",
    "audit",
    "scheduler",
)
# Redis error replies by their code, then the transport faults, then anything else.
REDIS_CODES = (
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "BUSY",
    "CLUSTERDOWN",
    "TRYAGAIN",
    "MOVED",
    "ASK",
    "NOGROUP",
    "UNBLOCKED",  # a blocked read cut off by a role change (master -> replica)
    "NOSCRIPT",
    "OOM",
)
REASONS = (*REDIS_CODES, "connection", "timeout", "redis_error", "database", "error")
_DB_MODULES = ("sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "psycopg")


def reason_of(exc: BaseException) -> str:
    """The bounded reason of a failure: a Redis error code, ``connection``, ``timeout``,
    ``redis_error`` (another error reply), ``database`` or ``error`` (anything else)."""
    if isinstance(exc, RedisError):
        code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
        if code in REDIS_CODES:
            return str(code)
        if isinstance(exc, RedisTimeoutError):
            return "timeout"
        if isinstance(exc, RedisConnectionError):
            return "connection"
        return "redis_error"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError):
        return "connection"
    if type(exc).__module__.split(".", 1)[0] in _DB_MODULES:
        return "database"
    return "error"


def describe(exc: BaseException) -> str:
    return f"{reason_of(exc)}: {type(exc).__name__}: {exc}"[:300]


class Supervisor:
    """Restarts, counts and reports the failures of a process's long-lived tasks."""

    def __init__(
        self,
        on_restart: Callable[[str, str], None] | None = None,
        backoff_initial_s: float = 0.1,
        backoff_max_s: float = 5.0,
    ) -> None:
        self.on_restart = on_restart
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.down: dict[str, str] = {}  # unit -> reason, while it fails
        self.restarts: dict[tuple[str, str], int] = {}  # (task, reason) -> failures since start
        self._failures: dict[str, int] = {}  # unit -> consecutive failures

    def failed(
        self,
        unit: str,
        task: str,
        exc: BaseException,
        backoff_initial_s: float | None = None,
        backoff_max_s: float | None = None,
        *,
        mark_down: bool = True,
    ) -> float:
        """Record one failure of ``unit``; returns the pause before its retry (capped backoff).
        ``mark_down=False``: a one-off failure (a slot): logged and counted, no outage to report."""
        reason = reason_of(exc)
        n = self._failures.get(unit, 0) + 1
        self._failures[unit] = n
        said = describe(exc)
        initial = self.backoff_initial_s if backoff_initial_s is None else backoff_initial_s
        cap = self.backoff_max_s if backoff_max_s is None else backoff_max_s
        delay = min(cap, initial * 2 ** min(n - 1, 30))
        previous = self.down.get(unit)
        if previous is None or previous.split(":", 1)[0] != reason:  # once per outage and reason
            if reason in ("error", "database", "redis_error"):
                log.error("%s failed (%s); retrying with backoff up to %gs", unit, said, cap, exc_info=exc)
            else:
                log.warning("%s failed (%s); retrying with backoff up to %gs", unit, said, cap)
        if mark_down:
            self.down[unit] = said
        else:
            self._failures.pop(unit, None)
        key = (task, reason)
        self.restarts[key] = self.restarts.get(key, 0) + 1
        if self.on_restart is not None:
            try:
                self.on_restart(task, reason)
            except Exception:  # metrics must never stop a restart
                log.exception("task restart observer failed")
        return delay

    def recovered(self, unit: str) -> None:
        """``unit`` made progress: end its outage (if any) and reset its backoff. Cheap when healthy."""
        if unit in self._failures:
            n = self._failures.pop(unit)
            reason = self.down.pop(unit, "")
            log.warning("%s recovered after %d failed attempts (last: %s)", unit, n, reason)

    async def run(
        self,
        unit: str,
        task: str,
        body: Callable[[], Awaitable[None]],
        until: Callable[[], bool] = lambda: False,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backoff_initial_s: float | None = None,
        backoff_max_s: float | None = None,
        mark_down: bool = True,
    ) -> None:
        """Run ``body()`` until it returns; when it raises, record the failure, pause, run it
        again (unless ``until()`` says the process is stopping). Its cancellation is not a failure.
        The body calls ``recovered(unit)`` when it makes progress."""
        while True:
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = self.failed(unit, task, exc, backoff_initial_s, backoff_max_s, mark_down=mark_down)
            if until():
                return
            await sleep(delay)

    async def every(
        self,
        unit: str,
        task: str,
        interval: float | Callable[[], float],
        fn: Callable[[], Awaitable[object]],
        until: Callable[[], bool],
        backoff_max_s: float | None = None,
    ) -> None:
        """Call ``fn()`` every ``interval`` seconds until ``until()``; a failed call is retried
        after the backoff (or the interval, when longer). ``backoff_max_s`` caps it for a duty
        that must not pause long (the heartbeat: below its TTL)."""
        while not until():
            pause = interval() if callable(interval) else interval
            try:
                await fn()
                self.recovered(unit)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                pause = max(pause, self.failed(unit, task, exc, backoff_max_s=backoff_max_s))
            await asyncio.sleep(pause)
