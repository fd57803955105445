"""The FastStream application that hosts a ``Worker``: the broker's connection, start-up and
graceful shutdown on SIGTERM/SIGINT, and the control channel as a FastStream subscriber."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from faststream import FastStream
from faststream.redis import RedisBroker, RedisClusterBroker, RedisSentinelBroker

from tq import keys
from tq.handlers import HandlerRegistry
from tq.observe import Observer
from tq.registry import all_queues, queues_of
from tq.schedules import Scheduler
from tq.settings import Settings
from tq.stats import StatsLeader
from tq.worker import Worker

log = logging.getLogger("tq.worker_app")


class WorkerApp:
    """``WorkerApp(families, settings, handlers).app`` is the FastStream app; ``.worker`` exists once
    started. The caller gives the handlers (the command line loads the families' into a registry).

    ``start_gate``: the worker takes no job until it returns True. When it is False at start-up,
    FastStream's start-up goes on without the worker (an HTTP host keeps answering) and a task asks
    again every ``gate_poll_s``, then starts the worker and calls ``on_worker_started``. A family
    service gates on its database schema being current."""

    def __init__(
        self,
        families: Sequence[str],
        settings: Settings,
        handlers: HandlerRegistry,
        observer: Observer | None = None,
        *,
        start_gate: Callable[[], Awaitable[bool]] | None = None,
        gate_poll_s: float = 5.0,
        on_worker_started: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.settings = settings
        self.start_gate = start_gate
        self.gate_poll_s = gate_poll_s
        self.on_worker_started = on_worker_started
        self.start_error: str | None = None  # why the worker failed to start after the gate opened
        self._gate_task: asyncio.Task[None] | None = None
        self.specs = queues_of(families) if families else all_queues()
        self.family = ",".join(families) if families else "all"
        self.handlers = handlers
        self.observer = observer  # metrics: see tq.observe
        # TQ_REDIS_CLUSTER: the URL names a cluster node; plain RedisBroker fails there (MOVED).
        # TQ_REDIS_SENTINELS: the master is found (and followed) through the Sentinels.
        self.broker: RedisBroker | RedisClusterBroker | RedisSentinelBroker
        if self.settings.sentinel_nodes:
            self.broker = RedisSentinelBroker(
                self.settings.redis_url,
                sentinels=self.settings.sentinel_nodes,
                sentinel_master_name=self.settings.redis_sentinel_master,
            )
        elif self.settings.redis_cluster:
            self.broker = RedisClusterBroker(self.settings.redis_url)
        else:
            self.broker = RedisBroker(self.settings.redis_url)
        self.app = FastStream(self.broker)
        self.worker: Worker | None = None
        self._audit_stop = asyncio.Event()
        self._audit_task: asyncio.Task[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._schedules_task: asyncio.Task[None] | None = None  # the schedules duty (tq.schedules)
        self.stats_leader: StatsLeader | None = None  # the stats duty (tq.stats), once started
        self.broker.subscriber(channel=keys.CONTROL_CHANNEL)(self._on_control)
        self.app.after_startup(self._start)
        self.app.on_shutdown(self._stop)

    async def _on_control(self, message: dict[str, Any]) -> None:
        if self.worker is not None:
            await self.worker.on_control(message)

    async def _start(self) -> None:
        if self.start_gate is None or await self.start_gate():
            await self._start_worker()
        else:
            self._gate_task = asyncio.create_task(self._start_when_open(), name="tq-start-gate")

    async def _start_when_open(self) -> None:
        assert self.start_gate is not None
        while not await self.start_gate():  # noqa: ASYNC110  (asks the caller, e.g. a database)
            await asyncio.sleep(self.gate_poll_s)
        try:
            await self._start_worker()
        except Exception as exc:
            log.exception("the worker did not start")
            self.start_error = f"worker failed to start: {type(exc).__name__}: {exc}"[:500]
            return
        if self.on_worker_started is not None:
            await self.on_worker_started()

    async def _start_worker(self) -> None:
        client = await self.broker.connect()
        self.worker = Worker(
            client, self.specs, self.handlers, self.settings, family=self.family, observer=self.observer
        )
        await self.worker.start(listen_control=False)
        if self.settings.audit_enabled:
            from tq.audit import AuditWriter

            writer = AuditWriter(client, self.settings.database_url, self.settings)
            self._audit_task = asyncio.create_task(
                writer.run_forever(self._audit_stop, self.worker.supervisor), name="tq-audit"
            )
        # every process runs the stats duty; the Redis lock elects the one that writes. It covers
        # every registry queue, and the 5-minute aggregates only when durable history is on.
        self.stats_leader = StatsLeader(
            client,
            all_queues(),
            self.settings,
            self.settings.database_url if self.settings.audit_enabled else None,
        )
        self._stats_task = asyncio.create_task(
            self.stats_leader.run_forever(self._audit_stop, self.worker.supervisor), name="tq-stats"
        )
        if self.settings.scheduler_enabled:  # likewise: the lock elects the one that fires
            scheduler = Scheduler(client, self.settings, observer=self.observer)
            self._schedules_task = asyncio.create_task(
                scheduler.run_forever(self._audit_stop, self.worker.supervisor), name="tq-schedules"
            )

    async def _stop(self) -> None:
        if self._gate_task is not None and not self._gate_task.done():
            self._gate_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gate_task
        if self.worker is not None:
            await self.worker.stop()
        self._audit_stop.set()  # also stops the stats duty, which releases its lock
        for task in (self._stats_task, self._audit_task, self._schedules_task):
            if task is not None:
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(task, timeout=10)
