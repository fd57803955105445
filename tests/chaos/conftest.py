"""The chaos tests' queue: registered in the test process as the chaos worker processes have it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import chaos_worker
from tq.registry import unregister_queue


@pytest.fixture
def chaos_queue() -> Iterator[None]:
    chaos_worker.register()
    yield
    unregister_queue(chaos_worker.QUEUE)
