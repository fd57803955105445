"""Helpers of tests/families/test_schema_upgrade.py: the databases the release made (test data in
``support/data``, made by ``support/release_db.py``; its docstring says how), and what is compared
before and after ``tq migrate``: every table's rows, and the schema as the database reports it."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import Connection, create_engine, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from tq_services.schema import load_models

DATA_DIR = Path(__file__).resolve().parent / "data"
RELEASE_SQLITE = DATA_DIR / "release-0009.sqlite"  # SQLite, with rows in every table
RELEASE_POSTGRES_SQL = DATA_DIR / "release-0009.postgresql.sql"  # the release's DDL for PostgreSQL
RELEASE_HEAD = "0009"

Rows = dict[str, list[dict[str, Any]]]


def copy_release_sqlite(target: Path) -> str:
    """A copy of the release's SQLite database at ``target``; its URL (the data file stays as is)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(RELEASE_SQLITE, target)
    return f"sqlite+aiosqlite:///{target}"


def release_rows() -> Rows:
    """Every table's rows in the release's SQLite database, read through today's models."""
    engine = create_engine(f"sqlite:///{RELEASE_SQLITE}")
    try:
        with engine.connect() as conn:
            return read_rows(conn)
    finally:
        engine.dispose()


def read_rows(conn: Connection) -> Rows:
    """Every model table's rows (typed values: aware datetimes, parsed JSON), in primary key order;
    only the columns the database has (the release's lack the columns later revisions add)."""
    out: Rows = {}
    for table in load_models().sorted_tables:
        present = {c["name"] for c in inspect(conn).get_columns(table.name)}
        columns = [c for c in table.columns if c.name in present]
        query = select(*columns).order_by(*table.primary_key.columns)
        out[table.name] = [dict(row._mapping) for row in conn.execute(query)]
    return out


async def load_release_postgres(url: str, rows: Rows) -> None:
    """Make the empty PostgreSQL database at ``url`` what the release would have made: its DDL (up to
    ``alembic_version`` 0009), then ``rows`` (the SQLite database's), sequences moved past them."""
    u = make_url(url)
    conn = await asyncpg.connect(
        host=u.host, port=u.port, user=u.username, password=u.password, database=u.database
    )
    try:
        await conn.execute(RELEASE_POSTGRES_SQL.read_text())  # several statements: BEGIN ... COMMIT
    finally:
        await conn.close()
    from tq.db import make_engine

    engine = make_engine(url)
    try:
        async with engine.begin() as aconn:
            for table in load_models().sorted_tables:
                if rows[table.name]:
                    await aconn.execute(table.insert(), rows[table.name])
                if "id" in table.c and table.c.id.autoincrement is not False:
                    await aconn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f"(SELECT max(id) FROM {table.name}))"
                        )
                    )
    finally:
        await engine.dispose()


def schema_of(conn: Connection) -> dict[str, Any]:
    """The schema as the database reports it: every table's columns (type, nullability, default,
    generated expression), keys, indexes, unique and check constraints; on SQLite also the SQL of
    every object (tables, indexes, triggers, the FTS5 table); the Alembic revision."""
    insp = inspect(conn)
    tables: dict[str, Any] = {}
    for name in sorted(insp.get_table_names()):
        tables[name] = {
            "columns": [
                (c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("computed"))
                for c in insp.get_columns(name)
            ],
            "pk": insp.get_pk_constraint(name),
            "fks": sorted(insp.get_foreign_keys(name), key=repr),
            "indexes": sorted(insp.get_indexes(name), key=repr),
            "uniques": sorted(insp.get_unique_constraints(name), key=repr),
            "checks": sorted(insp.get_check_constraints(name), key=repr),
        }
    schema: dict[str, Any] = {"tables": tables}
    if conn.dialect.name == "sqlite":
        objects = conn.execute(text("SELECT type, name, tbl_name, sql FROM sqlite_master"))
        schema["sqlite_master"] = sorted(tuple(row) for row in objects)
    else:
        schema["sequences"] = sorted(insp.get_sequence_names())
    schema["revision"] = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return schema


async def read(engine: AsyncEngine, fn: Any) -> Any:
    async with engine.connect() as conn:
        return await conn.run_sync(fn)
