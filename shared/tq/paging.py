"""``Page``: one page of a cursor-paginated listing (job records in ``tq.jobs``, DLQ entries in
``tq.dlq``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class Page:
    items: list[Any]
    next_cursor: str | None  # None: this is the last page
