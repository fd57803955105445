"""A running job's progress (``JobContext.progress``): the fraction done and a message, on the job's
record (fields ``pg``, ``pm``, ``pt``) and as a ``job.progress`` event.

Throttled per job so that a tight loop reporting progress does not flood Redis: at most one write
(record + event, one script call) per ``INTERVAL_S``; a report inside the interval is kept and
written when it ends, so the last report is always written (and before the job settles: the worker
calls ``close``)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.exceptions import RedisError

from tq import keys
from tq.envelope import Event, EventType, ProgressData
from tq.scripts import source

log = logging.getLogger("tq.progress")

INTERVAL_S = 0.5  # at most one write per job per interval
CLOSE_TIMEOUT_S = 2.0  # the last write at the job's end waits at most this long


class ProgressReporter:
    """One job's progress writer (made by ``JobContext.progress`` at its first report)."""

    def __init__(
        self, client: Any, queue: str, job_id: str, name: str, events: bool = True, script: Any = None
    ) -> None:
        self.client = client
        self.queue = queue
        self.job_id = job_id
        self.name = name
        self.events = events
        # the worker's registered script (``tq.scripts.Scripts.progress``); registered here without one
        self._script = script if script is not None else client.register_script(source("progress"))
        self._last_write = 0.0  # monotonic time of the last write
        self._pending: ProgressData | None = None  # reported, not yet written
        self._timer: asyncio.Task[None] | None = None
        self.writes = 0

    async def report(self, fraction: float, message: str | None = None) -> None:
        """Validate and record a report (``ValueError`` for a fraction outside 0-1 or a message
        over 500 characters); write it now unless the job wrote less than ``INTERVAL_S`` ago."""
        try:
            data = ProgressData(fraction=fraction, message=message)
        except Exception as exc:  # pydantic's ValidationError is a ValueError: say which report
            raise ValueError(f"progress({fraction!r}, {message!r}): {exc}") from None
        self._pending = data
        wait = self._last_write + INTERVAL_S - time.monotonic()
        if wait <= 0 and (self._timer is None or self._timer.done()):
            try:
                await self._write()
            except (RedisError, OSError) as exc:  # progress is advisory: the job goes on
                log.warning("%s %s: progress not written: %s", self.queue, self.job_id, exc)
        elif self._timer is None or self._timer.done():
            self._timer = asyncio.create_task(self._write_later(wait), name=f"tq-progress-{self.job_id}")

    async def _write_later(self, wait: float) -> None:
        await asyncio.sleep(max(0.0, wait))
        try:
            await self._write()
        except (RedisError, OSError) as exc:  # progress is advisory: the job goes on
            log.warning("%s %s: progress not written: %s", self.queue, self.job_id, exc)

    async def _write(self) -> None:
        data, self._pending = self._pending, None
        if data is None:
            return
        self._last_write = time.monotonic()
        now = time.time()
        event = ""
        if self.events:
            event = Event.model_construct(
                type=EventType.JOB_PROGRESS,
                queue=self.queue,
                job_id=self.job_id,
                name=self.name,
                at=now,
                data=data.model_dump(exclude_none=True),
            ).model_dump_json()
        await self._script(
            keys=[keys.job(self.queue, self.job_id)],
            args=[repr(float(data.fraction or 0.0)), data.message or "", int(now * 1000), event],
        )
        self.writes += 1

    async def close(self) -> None:
        """The job ended: write the last report if it is still waiting for its interval."""
        timer, self._timer = self._timer, None
        if timer is not None and not timer.done():
            timer.cancel()  # not awaited: a cancel of the job's own task must not be swallowed here
        if self._pending is None:
            return
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):  # not wait_for: it can lose a cancel (tq.cancelsafe)
                await self._write()
        except (RedisError, OSError, TimeoutError) as exc:
            log.warning("%s %s: last progress not written: %s", self.queue, self.job_id, exc)
