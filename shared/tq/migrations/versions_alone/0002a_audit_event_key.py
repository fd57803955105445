"""audit_log.event_key, for a database of the engine alone: the steps of 0010 (versions_chained)

The engine's later revisions continue the whole platform's chain (after the revisions of the code
above the engine); a database migrated by the engine alone (``tq.db.migrate`` without further
version locations) has no such chain, so it gets the same steps under this revision, after 0002.
A database of one kind is never migrated as the other: Alembic stops with "Can't locate revision".

Revision ID: 0002a
Revises: 0002
Create Date: 2026-12-02 00:00:00
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic.util import load_python_file

revision: str = "0002a"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_chained = load_python_file(
    str(Path(__file__).resolve().parent.parent / "versions_chained"), "0010_audit_event_key.py"
)
upgrade = _chained.upgrade
downgrade = _chained.downgrade
