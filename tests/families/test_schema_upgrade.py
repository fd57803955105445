"""The whole schema (engine + every family + content, ``tq_services.schema``): one Alembic history
across the families' folders, the models agree with it, and ``tq migrate`` upgrades a database
made by the release that kept every revision in the engine (commit ce29c81, head 0009) in place:
every row survives and the schema is the one a fresh ``tq migrate`` makes. The release's databases
are test data (support/data, made by support/release_db.py); SQLite always, PostgreSQL when one
is reachable."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from support.db import reset_postgres
from support.schema_upgrade import (
    RELEASE_HEAD,
    copy_release_sqlite,
    load_release_postgres,
    read,
    read_rows,
    release_rows,
    schema_of,
)
from tq.db import VERSIONS_CHAINED_DIR, VERSIONS_DIR, make_engine, normalize_url
from tq.db import alembic_config as engine_alembic_config
from tq.models import AuditLog, Base, QueueMetricAggregate
from tq.settings import get_settings
from tq_cli.main import app
from tq_services import schema
from typer.testing import CliRunner

SERVICES = Path(schema.__file__).resolve().parent

# revision -> the folder that owns it, in the order Alembic applies them
CHAIN = {
    "0001": VERSIONS_DIR,
    "0002": VERSIONS_DIR,
    "0003": SERVICES / "messaging" / "migrations",
    "0004": SERVICES / "webhooks" / "migrations",
    "0005": SERVICES / "content" / "migrations",
    "0006": SERVICES / "ai" / "migrations",
    "0006a": SERVICES / "plugins" / "migrations",  # split out of the release's 0007, runs before it
    "0007": SERVICES / "workflows" / "migrations",
    "0008": SERVICES / "analytics" / "migrations",
    "0008a": SERVICES / "media" / "migrations",  # split out of the release's 0009, runs before it
    "0009": SERVICES / "search" / "migrations",
    "0010": VERSIONS_CHAINED_DIR,  # the engine's audit_log.event_key, after the families' chain
}
HEAD = "0010"

# what the revisions after the release's head change in its rows: the audit log's job outcome
# rows get their event key (0010)
ADDED_BY_UPGRADE = {"audit_log": {1: {"event_key": "email:send/job-1#1:completed"}, 2: {"event_key": None}}}


def tq_migrate(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``tq migrate`` with ``TQ_DATABASE_URL=url``."""
    monkeypatch.setenv("TQ_DATABASE_URL", url)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["migrate"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "is up to date" in result.output


def full_diff(conn: Connection) -> list[Any]:
    """Alembic's autogenerate comparison of every model with the database (empty: they agree)."""
    context = MigrationContext.configure(conn, opts={"include_object": schema.include_object})
    return list(compare_metadata(context, schema.load_models()))


def test_one_linear_history_across_the_families_folders() -> None:
    scripts = ScriptDirectory.from_config(schema.alembic_config("sqlite+aiosqlite:///unused.db"))
    assert scripts.get_heads() == [HEAD]
    order = [s.revision for s in reversed(list(scripts.walk_revisions()))]
    assert order == list(CHAIN)
    for revision, folder in CHAIN.items():
        assert Path(scripts.get_revision(revision).path).parent == folder, revision
    # the engine alone knows its own revisions only: its later steps run right after its base
    alone = ScriptDirectory.from_config(engine_alembic_config("sqlite:///unused.db"))
    assert [s.revision for s in alone.walk_revisions()] == ["0002a", "0002", "0001"]


def test_every_table_belongs_to_one_owner() -> None:
    owned: dict[str, str] = {
        t: "the engine" for t in (AuditLog.__tablename__, QueueMetricAggregate.__tablename__)
    }
    for owner in schema.OWNERS:
        module = importlib.import_module(f"tq_services.{owner}.models")
        mine = {
            obj.__tablename__
            for obj in vars(module).values()
            if isinstance(obj, type) and issubclass(obj, Base) and obj.__module__ == module.__name__
        }
        assert mine, f"{owner} has no tables"
        for name in mine:
            assert name not in owned, f"{name} is {owned[name]}'s and {owner}'s"
            owned[name] = owner
    assert set(schema.load_models().tables) == set(owned)


async def test_tq_migrate_upgrades_a_release_database_in_place(
    database_backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = release_rows()
    assert all(before.values()), [t for t, rows in before.items() if not rows]  # data in every table
    postgres = normalize_url(database_backend).get_backend_name() == "postgresql"

    # the schema a fresh `tq migrate` makes
    if postgres:
        fresh_url = database_backend
        await reset_postgres(fresh_url)
    else:
        fresh_url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    tq_migrate(fresh_url, monkeypatch)
    engine = make_engine(fresh_url)
    try:
        fresh = await read(engine, schema_of)
        assert await read(engine, full_diff) == [], "the models and the migrations disagree"
    finally:
        await engine.dispose()
    assert fresh["revision"] == [HEAD]

    # a database the release made, with rows in every table
    if postgres:
        url = database_backend
        await reset_postgres(url)
        await load_release_postgres(url, before)
    else:
        url = copy_release_sqlite(tmp_path / "release.db")
    engine = make_engine(url)
    try:
        release = await read(engine, schema_of)
        assert release["revision"] == [RELEASE_HEAD]

        tq_migrate(url, monkeypatch)  # in place
        tq_migrate(url, monkeypatch)  # and again: nothing to do

        upgraded = await read(engine, schema_of)
        after = await read(engine, read_rows)
        diff = await read(engine, full_diff)
    finally:
        await engine.dispose()
    expected = {
        table: [row | ADDED_BY_UPGRADE.get(table, {}).get(row.get("id"), {}) for row in rows]
        for table, rows in before.items()
    }
    assert after == expected  # every row of every table, unchanged but for the keys 0010 adds
    assert upgraded == fresh  # the schema a fresh migrate makes (SQLite: every object's SQL too)
    assert diff == []
