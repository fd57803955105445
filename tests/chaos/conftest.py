"""Fixtures of the chaos tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support import chaos_worker
from support.chaos import Q
from tq.registry import unregister_queue


@pytest.fixture
def chaos_queue() -> Iterator[None]:
    """The chaos worker's queue, registered for the test only."""
    chaos_worker.register()
    yield
    unregister_queue(Q)
