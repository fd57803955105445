"""A database that goes away and comes back, for the chaos tests and tests/support/audit_outage.py:
PostgreSQL is cut off by a TCP proxy the caller controls (connections dropped, new ones refused);
SQLite is locked by an exclusive transaction on another connection, so writers time out."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable

from sqlalchemy.engine import make_url
from tq.db import normalize_url


class Proxy:
    """A TCP proxy to PostgreSQL that can drop every connection and refuse new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.up = True
        self.pipes: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                dst.close()

        for task in (
            asyncio.create_task(pipe(reader, up_writer)),
            asyncio.create_task(pipe(up_reader, writer)),
        ):
            self.pipes.add(task)
            task.add_done_callback(self.pipes.discard)

    def cut(self) -> None:
        self.up = False
        for task in list(self.pipes):
            task.cancel()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@contextlib.asynccontextmanager
async def outage_for(
    database_url: str,
) -> AsyncIterator[tuple[str, Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]]:
    """(url the workers use, start outage, end outage)."""
    url = normalize_url(database_url)
    if url.get_backend_name() == "postgresql":
        proxy = Proxy(url.host or "127.0.0.1", url.port or 5432)
        port = await proxy.start()

        async def cut() -> None:
            proxy.cut()

        async def restore() -> None:
            proxy.up = True

        try:
            yield url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False), cut, restore
        finally:
            await proxy.close()
        return
    lock: list[sqlite3.Connection] = []

    def take() -> None:
        # taken and released on worker threads that may differ: the connection crosses threads
        conn = sqlite3.connect(
            make_url(str(url)).database or "", timeout=10, isolation_level=None, check_same_thread=False
        )
        conn.execute("BEGIN EXCLUSIVE")  # every other writer now waits out its busy timeout, then fails
        lock.append(conn)

    def release() -> None:
        while lock:
            conn = lock.pop()
            conn.execute("COMMIT")
            conn.close()

    async def cut() -> None:  # in a thread: the lock waits for the loop's own writers to commit
        await asyncio.to_thread(take)

    async def restore() -> None:
        await asyncio.to_thread(release)

    try:
        yield str(url), cut, restore
    finally:
        await restore()
