"""The loop-lag watchdog: notices a handler that blocks the event loop (synchronous code: a
blocking client, CPU work, ``time.sleep``), which no time limit can cancel and which stops every
other job, read, settle and probe of the process while it runs.

The loop stamps a heartbeat every ``tick_s`` (one timer callback: nothing per job); a daemon
thread checks it. When the stamp is older than ``threshold_s`` the thread looks at the loop
thread's stack (``sys._current_frames``) for the frame of the job being run (``marker``, the code
of ``QueueRunner._execute``) and logs, once per block, the job, queue and handler, and calls
``on_blocked(queue, job)`` (the metric ``tq_worker_loop_blocked_total``); the end of the block is
logged with its length. ``blocked()`` says what blocks right now (``Worker.intake_problem``).

Blocking work belongs in a thread: ``await asyncio.to_thread(fn, *args)``.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Any

log = logging.getLogger("tq.loopwatch")

NO_JOB = "_none"  # a block outside any job (the queue and job labels of the metric)


class LoopWatchdog:
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        marker: CodeType,
        threshold_s: float = 1.0,
        on_blocked: Callable[[str, str], None] | None = None,
        tick_s: float = 0.1,
    ) -> None:
        self.loop = loop
        self.marker = marker
        self.threshold_s = threshold_s
        self.on_blocked = on_blocked
        self.tick_s = tick_s
        self.blocks = 0
        self._beat_at = time.monotonic()
        self._blocked: str | None = None  # what blocks right now, as logged
        self._loop_thread = threading.get_ident()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Call from the loop's thread."""
        self._loop_thread = threading.get_ident()
        self._beat()
        self._thread = threading.Thread(target=self._watch, name="tq-loopwatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not None:
            self._thread.join(timeout=2)

    def blocked(self) -> str | None:
        """What blocks the loop right now (None: it runs); from the loop itself it is always None
        unless read while the block is being reported."""
        return self._blocked

    def _beat(self) -> None:
        self._beat_at = time.monotonic()
        if not self._stop.is_set():
            self._timer = self.loop.call_later(self.tick_s, self._beat)

    def _watch(self) -> None:
        since = 0.0
        while not self._stop.wait(self.tick_s):
            lag = time.monotonic() - self._beat_at
            if lag > self.threshold_s:
                if self._blocked is None:
                    since = self._beat_at
                    queue, job, what = self._culprit()
                    self.blocks += 1
                    self._blocked = f"event loop blocked by {what}"
                    log.warning(
                        "event loop blocked for %.1fs by %s: handlers must not block the loop "
                        "(run blocking work with asyncio.to_thread)",
                        lag,
                        what,
                    )
                    if self.on_blocked is not None:
                        try:
                            self.on_blocked(queue, job)
                        except Exception:
                            log.exception("loop watchdog observer failed")
            elif self._blocked is not None:
                log.warning("event loop ran again after %.1fs (%s)", self._beat_at - since, self._blocked)
                self._blocked = None

    def _culprit(self) -> tuple[str, str, str]:
        """(queue, job name, description) of the job whose frame is on the loop thread's stack."""
        frame: FrameType | None = sys._current_frames().get(self._loop_thread)
        while frame is not None:
            if frame.f_code is self.marker:
                local: dict[str, Any] = frame.f_locals
                handler, runner = local.get("handler"), local.get("self")
                queue = str(getattr(runner, "queue", NO_JOB))
                name, job_id = str(local.get("name", NO_JOB)), local.get("job_id", "?")
                qualname = getattr(handler, "__qualname__", repr(handler))
                return queue, name, f"job {job_id} ({queue} {name}) in handler {qualname}"
            frame = frame.f_back
        return NO_JOB, NO_JOB, "code outside any job"
