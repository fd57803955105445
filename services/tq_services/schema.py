"""The whole durable schema: the engine's tables plus every family's (and the shared content's).

Each family owns its tables (``tq_services.<family>.models``, on the engine's ``Base``) and their
Alembic revisions (``tq_services/<family>/migrations/``); the engine's migration runner
(``tq.db.migrate``) knows only its own revisions, so this module hands it every family's folder
as a further version location and the search family's ``include_object`` hook. ``tq migrate``
calls ``migrate`` here.

One linear history runs across all the folders, in this order (the ids of the release that kept
every revision in ``tq/migrations`` are kept)::

    0001 audit_log, 0002 queue_metric_aggregate    engine (tq/migrations/versions)
    0003 messaging, 0004 webhooks, 0005 content, 0006 ai
    0006a plugins, 0007 workflows
    0008 analytics
    0008a media, 0009 search

The release's 0007 created the workflows and plugins tables together, and its 0009 the media and
search tables. Each is split so that a family owns its own: the part split off gets a new id and
runs just *before* the revision that keeps the old id (0006a before 0007, 0008a before 0009).
Alembic counts a revision as applied when it is an ancestor of the database's stamped revision,
so a database that release stamped 0007, 0008 or 0009 has every split-off part among its
ancestors and nothing is created twice: a database at the release's head (0009) is already at
this head, and ``migrate`` leaves it as it is. A new revision of any family continues the chain
from the current head (``down_revision`` = the head) in that family's folder.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData
from sqlalchemy.engine import URL
from tq import db
from tq.models import Base

from tq_services.search.models import include_object  # the full-text objects its migration makes per dialect

SERVICES_DIR = Path(__file__).resolve().parent

# the packages that own tables, in the order of their revisions
OWNERS = ("messaging", "webhooks", "content", "ai", "plugins", "workflows", "analytics", "media", "search")

# every family's (and content's) revision folder, after the engine's own
VERSION_LOCATIONS: tuple[Path, ...] = tuple(SERVICES_DIR / owner / "migrations" for owner in OWNERS)


def load_models() -> MetaData:
    """Import every family's models so ``Base.metadata`` knows every table; returns it."""
    for owner in OWNERS:
        importlib.import_module(f"{__package__}.{owner}.models")
    return Base.metadata


def alembic_config(url: str | URL | None = None) -> Any:
    """An ``alembic.config.Config`` for the whole schema, bound to ``url`` (for ``ScriptDirectory``,
    ``command.*``); ``config.attributes["target_metadata"]`` holds every table."""
    cfg = db.alembic_config(url, version_locations=VERSION_LOCATIONS, include_object=include_object)
    cfg.attributes["target_metadata"] = load_models()
    return cfg


def migrate(url: str | URL | None = None, revision: str = "head") -> None:
    """Create or upgrade the database at ``url`` (default: ``settings.database_url``): the engine's
    tables and every family's. Synchronous and safe with an event loop running (``tq.db.migrate``)."""
    load_models()
    db.migrate(url, revision, version_locations=VERSION_LOCATIONS, include_object=include_object)


async def migrate_async(url: str | URL | None = None, revision: str = "head") -> None:
    """``migrate`` without blocking the running event loop."""
    load_models()
    await db.migrate_async(url, revision, version_locations=VERSION_LOCATIONS, include_object=include_object)


@dataclass(frozen=True)
class SchemaState:
    """Where a database stands against this code's migrations."""

    current: str | None  # the database's alembic revision; None: never migrated
    head: str  # the revision this code needs
    behind: bool  # current is None or an ancestor of head: `tq migrate` would upgrade it

    def describe(self) -> str:
        if not self.behind:
            return f"database schema at {self.current}"
        at = self.current or "none (never migrated)"
        return f"database schema at revision {at}, needs {self.head}: run `tq migrate`"


def schema_state(url: str | URL | None = None) -> SchemaState:
    """The database's revision (default: ``settings.database_url``) against the head of the whole
    history. A revision this code does not know (a newer release migrated the database) is not
    behind: old pods of a rolling upgrade keep working. Blocking; safe with an event loop running."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(url))
    head = script.get_current_head()
    assert head is not None, "the migration history has no head"
    current = db.current_revision(url)
    ancestors = {rev.revision for rev in script.iterate_revisions(head, "base")}
    behind = current is None or (current != head and current in ancestors)
    return SchemaState(current=current, head=head, behind=behind)


__all__ = [
    "OWNERS",
    "VERSION_LOCATIONS",
    "SchemaState",
    "alembic_config",
    "include_object",
    "load_models",
    "migrate",
    "migrate_async",
    "schema_state",
]
