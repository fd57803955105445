"""A cancelled task stops, even in the middle of a Redis call.

On Python 3.11, ``asyncio.wait_for`` loses a cancellation that arrives while the awaited operation
is just completing (CPython gh-86296, rewritten in 3.12): the caller gets the result and the task
runs on. redis-py's async connections bound every write with it when a socket timeout is set (the
default), so a task cancelled during a Redis call (a job at its time limit or cancelled by ``tq
cancel``, a worker's duty at shutdown, a lease renewer) could go on forever. Their module is given
``wait_for`` as 3.12 defines it, on ``asyncio.timeout``; everything else in ``asyncio`` is the same.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


async def wait_for(aw: Awaitable[T], timeout: float | None) -> T:
    """``asyncio.wait_for`` as in Python 3.12: a cancellation always reaches the caller."""
    async with asyncio.timeout(timeout):
        return await aw


def _asyncio_with_safe_wait_for() -> types.ModuleType:
    module = types.ModuleType("asyncio", "asyncio, with a wait_for that never loses a cancellation")
    module.__dict__.update(vars(asyncio))
    module.wait_for = wait_for  # type: ignore[attr-defined]
    return module


def patch_redis() -> None:
    """Give redis-py's async connection module the cancellation-safe ``wait_for`` (idempotent)."""
    if sys.version_info >= (3, 12):
        return
    import redis.asyncio.connection as connection

    current: Any = connection.asyncio
    if current.wait_for is not wait_for:
        connection.asyncio = _asyncio_with_safe_wait_for()
