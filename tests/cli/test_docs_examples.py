"""Every ``tq enqueue`` the README and docs/ show, run exactly as written (read from the markdown,
so a changed example is tested as changed) with the ``tq`` of this venv, against a real
redis-server and the real family service of its queue (``tq serve FAMILY``: the family's
handlers, a migrated SQLite database, a local SMTP server): each job must complete, none
dead-letter."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
import redis
import redis.asyncio as aioredis
from support import fast_settings, running, wait_for, wait_until
from support.admin import admin_settings, serving, sqlite_database
from support.admin import token as admin_token
from support.mailbox import Mailbox, running_mailbox
from support.services import http_status, messaging_db, serve_family, stop_process, wait_ready
from tq import dlq, keys
from tq.envelope import JobState
from tq.handlers import HandlerRegistry, JobContext
from tq.jobs import JobRecord, get_job
from tq.producer import Producer
from tq.registry import all_queues, get_queue
from tq_services import default_schedules
from tq_services.admin import revocation
from tq_services.search import index as search_index
from tq_services.store import dispose_engines, sessions

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
INLINE = re.compile(r"`(tq enqueue [^`\n]+)`")
SHELLS = ("sh", "bash", "shell", "console")
TQ = Path(sys.executable).parent / "tq"

pytestmark = pytest.mark.timeout(120)


def shell_blocks(text: str) -> list[str]:
    """The bodies of the text's sh/bash/shell/console fenced blocks (a fence's info string is read
    only on the line that opens it: a closing fence never opens the next block)."""
    blocks: list[str] = []
    body: list[str] | None = None
    language = ""
    for line in text.splitlines(keepends=True):
        fence = re.match(r"^\s*```(\S*)", line)
        if fence and body is None:
            body, language = [], fence.group(1)
        elif fence and body is not None:
            if language in SHELLS:
                blocks.append("".join(body))
            body = None
        elif body is not None:
            body.append(line)
    return blocks


def enqueue_examples() -> list[tuple[str, str]]:
    """(file, command) for each `tq enqueue` in the docs: inline code, or a line of a shell block."""
    found: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text()
        commands = INLINE.findall(text)
        for block in shell_blocks(text):
            commands += [
                line.strip().removeprefix("$ ")
                for line in block.splitlines()
                if line.strip().removeprefix("$ ").startswith("tq enqueue ")
            ]
        for command in dict.fromkeys(commands):
            if command.split()[2].isupper():  # a synopsis (`tq enqueue QUEUE JOB ...`), not an example
                continue
            found.append((str(path.relative_to(REPO)), command))
    return found


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with running_mailbox() as served:
        yield served


def test_the_readme_shows_an_enqueue_example() -> None:
    examples = enqueue_examples()
    assert any(f == "README.md" and c.startswith("tq enqueue email:send send-email") for f, c in examples), (
        examples
    )


@pytest.mark.parametrize(("doc", "command"), enqueue_examples())
def test_enqueue_example_runs_as_written(
    doc: str, command: str, redis_url: str, tmp_path: Path, mailbox: tuple[Mailbox, int]
) -> None:
    assert TQ.exists(), f"{TQ} is missing (make install)"
    queue = command.split()[2]
    family = get_queue(queue).family
    env = {
        "TQ_DATABASE_URL": messaging_db(tmp_path),  # migrated: the handlers log what they send
        "TQ_SMTP_HOST": "127.0.0.1",
        "TQ_SMTP_PORT": str(mailbox[1]),
        "TQ_SMTP_TLS": "none",
    }
    client = redis.Redis.from_url(redis_url)
    with ExitStack() as stack:
        proc, _ = serve_family(redis_url, family, **env)
        stack.callback(stop_process, proc)
        stack.callback(client.close)
        run = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", command],
            env={
                **os.environ,
                **env,
                "TQ_REDIS_URL": redis_url,
                "PATH": f"{TQ.parent}{os.pathsep}{os.environ['PATH']}",
            },
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 0, f"{doc}: {command}\n{run.stdout}{run.stderr}"
        job_id = run.stdout.strip().splitlines()[-1]
        assert job_id, run.stdout

        def settled() -> bool:
            done = int(client.hget(keys.counters(queue), "completed") or 0)
            return done == 1 or client.xlen(keys.dlq(queue)) > 0

        wait_until(settled, 30, f"{command} completed")
        dead = client.xrange(keys.dlq(queue))
        assert not dead, f"{doc}: `{command}` dead-lettered: {dead}"
        if queue == "email:send":
            assert mailbox[0].recipients, "no email reached the SMTP server"


# ---- every other `tq` command the docs show ---------------------------------------------------------
# The README's CLI table (its example column) and the `tq` lines of the docs' shell blocks, each run
# exactly as written with bash. Only what cannot exist in a test is replaced, and only by the value
# the reader would put there: a placeholder id (the table's `GqruVHuH…`, `1732345678000-0`, the
# truncated `3f2a…`) by the id of a real job, DLQ entry or token; the admin service's address
# (`http://localhost:8080`, `https://tq-admin.example.com`) by the one the suite serves it on.
TABLE_EXAMPLE = re.compile(r"^\| `[^`]+`.*\| `([^`]+)` \|$", re.M)
GROUPS = {"dlq", "token", "schedule"}
API = re.compile(r"^tq --api (\S+) --token \"\$TOKEN\" ")
# the settings a reader's shell has for the admin commands (`tq token ...`, `--api`)
JWT_KEY = "docs-examples-signing-key-0123456789abcdef"


def tq_examples() -> list[tuple[str, str]]:
    """(file, command) of every `tq ...` example but `tq enqueue` (the test above runs those)."""
    found: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text()
        commands = TABLE_EXAMPLE.findall(text) if path.name == "README.md" else []
        for block in shell_blocks(text):
            lines = block.replace("\\\n", " ").splitlines()
            commands += [" ".join(line.split("  #", 1)[0].split()) for line in lines]
        for command in dict.fromkeys(commands):
            program = [word for word in command.split() if not re.match(r"^[A-Z_]+=", word)][:1]
            if program == ["tq"] and " enqueue " not in command:
                found.append((str(path.relative_to(REPO)), command))
    return found


def verb(command: str) -> str:
    """The scenario's key: `dlq list`, `job cancel`, `--api dlq replay`, `queues`, ..."""
    api = API.match(command)
    words = [w for w in command[api.end() if api else 0 :].split() if not re.match(r"^[A-Z_]+=", w)]
    words = words[1:] if words[0] == "tq" else words
    key = " ".join(words[:2] if words[0] in GROUPS or words[:2] == ["job", "cancel"] else words[:1])
    return f"--api {key}" if api else key


class Reader:
    """What the reader's machine has when they type a documented command: Redis, a migrated
    database, the admin signing key, a token; the admin service when the command needs one."""

    def __init__(self, redis_url: str, tmp_path: Path, stack: ExitStack) -> None:
        self.redis_url, self.tmp_path, self.stack = redis_url, tmp_path, stack
        self.r = redis.Redis.from_url(redis_url)
        stack.callback(self.r.close)
        self.database_url = sqlite_database(tmp_path)
        self.subs: dict[str, str] = {}
        self.env = {
            **os.environ,
            "TQ_REDIS_URL": redis_url,
            "TQ_DATABASE_URL": self.database_url,
            "TQ_ADMIN_JWT_KEY": JWT_KEY,
            "PATH": f"{TQ.parent}{os.pathsep}{os.environ['PATH']}",
            "COLUMNS": "250",  # a wide terminal: Rich's tables keep ids whole
        }

    def serve_admin(self, command: str) -> None:
        """The admin service (as the admin tests start it), and the command's URL pointing at it."""
        config = admin_settings(self.redis_url, self.database_url, admin_jwt_key=JWT_KEY)
        served = self.stack.enter_context(serving(config))
        api = API.match(command)
        assert api is not None
        self.subs[api.group(1)] = served.url
        self.env["TOKEN"] = admin_token(served, "owner", subject="ops@example.com")

    def command(self, command: str) -> str:
        for shown, real in self.subs.items():
            assert shown in command, f"{shown!r} is no longer in {command!r}: update the scenario"
            command = command.replace(shown, real)
        return command

    def run(self, command: str) -> str:
        """Run the command with bash; it must exit 0; its stdout."""
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", self.command(command)],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}{done.stderr}"
        return done.stdout

    def start(self, command: str) -> subprocess.Popen[str]:
        """A long-running command (`tq worker`, `tq serve`), stopped with SIGTERM at the end."""
        proc = subprocess.Popen(
            ["bash", "-c", f"exec env {self.command(command)}"],  # env: with the VAR=value it sets
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stack.callback(lambda: proc.poll() is None and stop_process(proc))
        return proc

    def stopped_cleanly(self, proc: subprocess.Popen[str]) -> None:
        code = stop_process(proc)
        assert code == 0, f"exit {code} after SIGTERM: {proc.stderr.read() if proc.stderr else ''}"

    def job(self, queue: str, job_id: str) -> JobRecord:
        return asyncio.run(self._job(queue, job_id))

    async def _job(self, queue: str, job_id: str) -> JobRecord:
        client = aioredis.Redis.from_url(self.redis_url)
        try:
            return await get_job(client, queue, job_id)
        finally:
            await client.aclose()


def jobs_handled(
    redis_url: str,
    queue: str,
    job: str,
    payloads: list[dict[str, Any]],
    *,
    fail: type[Exception],
    attempts: int,
    until: JobState,
) -> list[str]:
    """Enqueue ``payloads`` and run them with a real worker whose handler raises ``fail``, until
    every job is in state ``until`` (DEAD: dead-lettered with that error type; FAILED: in backoff)."""

    async def go() -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        retry = {"attempts": attempts, "initial_s": 3600, "max_s": 3600, "jitter": 0}
        settings = fast_settings(redis_url, queues={queue: {"retry": retry}})
        handlers = HandlerRegistry()

        async def handler(ctx: JobContext, payload: Any) -> None:
            raise fail("the endpoint did not answer within 10 s")

        handlers.add(queue, job, handler)
        try:
            producer = Producer(client, settings)
            ids = [await producer.enqueue(queue, job, payload) for payload in payloads]

            async def there() -> bool:
                return all([(await get_job(client, queue, i)).state is until for i in ids])

            async with running(client, settings, handlers, queue=queue):
                await wait_for(there, what=f"{len(ids)} jobs {until.value}")
            return ids
        finally:
            await client.aclose()

    return asyncio.run(go())


WEBHOOK = {"endpoint_id": 7, "event": "article.published", "data": {"article_id": 42}}
SUMMARY = {"article_id": 42}


def timeouts(reader: Reader, n: int) -> list[str]:
    """``n`` webhooks:deliver jobs dead-lettered with TimeoutError, and one with another error."""
    ids = jobs_handled(
        reader.redis_url, "webhooks:deliver", "deliver-webhook", [WEBHOOK] * n,
        fail=TimeoutError, attempts=1, until=JobState.DEAD,
    )  # fmt: skip
    jobs_handled(
        reader.redis_url, "webhooks:deliver", "deliver-webhook", [{**WEBHOOK, "endpoint_id": 8}],
        fail=ConnectionRefusedError, attempts=1, until=JobState.DEAD,
    )  # fmt: skip
    return ids


def dlq_ids(reader: Reader, queue: str) -> dict[str, str]:
    """DLQ id -> job id (read with the engine's own DLQ API)."""
    return asyncio.run(_dlq_ids(reader.redis_url, queue))


async def _dlq_ids(redis_url: str, queue: str) -> dict[str, str]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        page = await dlq.list_dead(client, queue, limit=1000)
        return {d.dlq_id: d.job_id for d in page.items}
    finally:
        await client.aclose()


def waiting(reader: Reader, queue: str) -> int:
    return int(reader.r.xlen(keys.stream(queue)))


def a_failed_summary(reader: Reader) -> str:
    """An ai:content generate-summary job in retry backoff (due again in an hour)."""
    (job_id,) = jobs_handled(
        reader.redis_url, "ai:content", "generate-summary", [SUMMARY],
        fail=TimeoutError, attempts=3, until=JobState.FAILED,
    )  # fmt: skip
    return job_id


def the_shown_job(reader: Reader, command: str) -> str:
    """A failed summary standing for the job id the command shows (`tq job [cancel] ai:content ID`)."""
    job_id = reader.subs[command.split()[-1]] = a_failed_summary(reader)
    return job_id


def scene_queues(reader: Reader, command: str) -> None:
    shown = json.loads(reader.run(command))
    assert {q["queue"] for q in shown} == {q.name for q in all_queues()}


def scene_schema(reader: Reader, command: str) -> None:
    schema = json.loads(reader.run(command))
    assert {"to", "template"} <= set(schema["properties"]) and "to" in schema["required"]


def scene_jobs(reader: Reader, command: str) -> None:
    assert a_failed_summary(reader) in reader.run(command)


def scene_job(reader: Reader, command: str) -> None:
    job_id = the_shown_job(reader, command)
    out = reader.run(command)
    assert job_id in out and "generate-summary" in out and "TimeoutError" in out


def scene_job_cancel(reader: Reader, command: str) -> None:
    job_id = the_shown_job(reader, command)  # in backoff: due again in an hour
    reader.run(command)
    # a job that was not running is removed: it never runs
    assert not reader.r.exists(keys.job("ai:content", job_id))
    assert reader.r.zscore(keys.delayed("ai:content"), job_id) is None


def scene_pause(reader: Reader, command: str) -> None:
    reader.run(command)
    assert reader.r.hget(keys.config("ai:content"), "paused") in (b"1", b"true")


def scene_resume(reader: Reader, command: str) -> None:
    reader.run(command.replace("resume", "pause"))
    reader.run(command)
    assert reader.r.hget(keys.config("ai:content"), "paused") not in (b"1", b"true")


def scene_concurrency(reader: Reader, command: str) -> None:
    reader.run(command)
    assert reader.r.hget(keys.config("ai:content"), "concurrency") == b"4"


def scene_dlq_list(reader: Reader, command: str) -> None:
    ids = timeouts(reader, 2)
    out = reader.run(command + " --json" if "--json" not in command else command)
    listed = json.loads(out)["items"]
    assert sorted(d["job_id"] for d in listed) == sorted(ids)  # the other error type is not listed
    assert {d["error_type"] for d in listed} == {"TimeoutError"}
    reader.run(command)  # and as written, the table


def one_dead(reader: Reader, command: str) -> tuple[str, str]:
    """One TimeoutError dead letter of webhooks:deliver; the command's DLQ id is its."""
    (job_id,) = timeouts(reader, 1)
    dlq_id = next(d for d, j in dlq_ids(reader, "webhooks:deliver").items() if j == job_id)
    reader.subs[re.findall(r"\b\d{13}-\d+\b", command)[0]] = dlq_id
    return dlq_id, job_id


def scene_dlq_show(reader: Reader, command: str) -> None:
    dlq_id, job_id = one_dead(reader, command)
    out = reader.run(command)
    assert dlq_id in out and job_id in out and "TimeoutError" in out and "stack" in out


def scene_dlq_delete(reader: Reader, command: str) -> None:
    dlq_id, _ = one_dead(reader, command)
    assert f"deleted {dlq_id}" in reader.run(command)
    assert dlq_id not in dlq_ids(reader, "webhooks:deliver") and len(dlq_ids(reader, "webhooks:deliver")) == 1


def scene_dlq_replay(reader: Reader, command: str) -> None:
    """`dlq replay webhooks:deliver --limit 100`, on Redis or through the admin API: every entry is
    back in the queue as a waiting job, the DLQ is empty."""
    ids = timeouts(reader, 3)
    dead = set(dlq_ids(reader, "webhooks:deliver").values())
    assert waiting(reader, "webhooks:deliver") == 0 and len(dead) == 4
    if command.startswith("tq --api"):
        reader.serve_admin(command)
    result = json.loads(reader.run(command))
    assert (result["replayed"], len(result["job_ids"])) == (4, 4)
    assert reader.r.xlen(keys.dlq("webhooks:deliver")) == 0
    assert waiting(reader, "webhooks:deliver") == 4
    for job_id in result["job_ids"]:
        assert reader.job("webhooks:deliver", job_id).state is JobState.WAITING
    assert set(ids) <= dead


def scene_dlq_purge(reader: Reader, command: str) -> None:
    timeouts(reader, 2)
    assert "purged 3 entries from webhooks:deliver" in reader.run(command)
    assert reader.r.xlen(keys.dlq("webhooks:deliver")) == 0


def scene_api_dlq_list(reader: Reader, command: str) -> None:
    """`tq --api URL --token "$TOKEN" dlq list ai:content` (the fix of c5a2cac): the admin service
    lists the queue's dead letters."""
    ids = jobs_handled(
        reader.redis_url, "ai:content", "generate-summary", [SUMMARY, {"article_id": 43}],
        fail=TimeoutError, attempts=1, until=JobState.DEAD,
    )  # fmt: skip
    reader.serve_admin(command)
    out = reader.run(command)
    for dlq_id in dlq_ids(reader, "ai:content"):
        assert dlq_id in out
    listed = json.loads(reader.run(command + " --json"))["items"]
    assert sorted(d["job_id"] for d in listed) == sorted(ids)


def scene_worker(reader: Reader, command: str) -> None:
    """`tq worker --family ai --family search`: consumers of those families' queues (and no
    other's) heartbeat until SIGTERM; then it drains and exits 0."""
    proc = reader.start(command)
    families = set(re.findall(r"--family (\S+)", command))
    mine = [q.name for q in all_queues() if q.family in families]

    def consuming() -> bool:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        return all(reader.r.zcard(keys.consumers(q)) for q in mine)

    wait_until(consuming, 30, f"consumers on {mine}")
    assert not any(reader.r.zcard(keys.consumers(q.name)) for q in all_queues() if q.family not in families)
    reader.stopped_cleanly(proc)


def scene_serve(reader: Reader, command: str) -> None:
    """`tq serve messaging --port 8000` / `tq serve admin --port 8080`: ready on that port (all
    interfaces by default? the port as written), then SIGTERM drains it and it exits 0."""
    port = int(command.split("--port ")[1].split()[0])
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", port)) == 0:
            pytest.skip(f"port {port}, which the command names, is taken on this machine")
    proc = reader.start(command)
    wait_ready(proc, port)
    assert http_status(port, "/healthz") == 200
    reader.stopped_cleanly(proc)


def scene_token_create(reader: Reader, command: str) -> None:
    token = reader.run(command).strip()
    claims = pyjwt.decode(token, JWT_KEY, algorithms=["HS256"], options={"verify_aud": False})
    assert claims["role"] == "owner" and 3500 <= claims["exp"] - claims["iat"] <= 3600


def scene_token_revoke(reader: Reader, command: str) -> None:
    token = reader.run("tq token create --role owner --ttl 1h").strip()
    jti = pyjwt.decode(token, JWT_KEY, algorithms=["HS256"], options={"verify_aud": False})["jti"]
    (shown,) = re.findall(r"\b[0-9a-f]+…", command)  # a truncated id: any real token's stands for it
    reader.subs[shown] = jti
    assert f"revoked {jti}" in reader.run(command)
    assert reader.r.exists(revocation.key(jti))


def schedules_stored(reader: Reader) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in json.loads(reader.run("tq schedule list --json"))}


def scene_schedule_list(reader: Reader, command: str) -> None:
    reader.run("tq schedule install-defaults")
    rows = json.loads(reader.run(command))
    assert {row["name"] for row in rows} == {s.name for s in default_schedules()}


def scene_schedule_add(reader: Reader, command: str) -> None:
    reader.run(command)
    added = schedules_stored(reader)["nightly-rollup"]
    assert (added["queue"], added["job"], added["cron"]) == (
        "analytics:process",
        "rollup-daily",
        "15 0 * * *",
    )
    assert added["payload"] == {"day": "$yesterday"}
    assert (added["concurrencyPolicy"], added["startingDeadlineSeconds"]) == ("Forbid", 21600)


def scene_schedule_remove(reader: Reader, command: str) -> None:
    name = command.split()[3]
    data = json.dumps({"day": "$yesterday"})
    reader.run(f"tq schedule add {name} analytics:process rollup-daily --cron '15 0 * * *' --data '{data}'")
    reader.run(command)
    assert name not in schedules_stored(reader)


def scene_schedule_suspend(reader: Reader, command: str) -> None:
    reader.run("tq schedule install-defaults")
    reader.run(command)
    assert schedules_stored(reader)[command.split()[3]]["suspend"] is True


def scene_schedule_run_now(reader: Reader, command: str) -> None:
    reader.run("tq schedule install-defaults")
    name = command.split()[3]
    job_id = reader.run(command).strip().splitlines()[-1]
    queue = schedules_stored(reader)[name]["queue"]
    assert reader.job(queue, job_id).state is JobState.WAITING


def scene_schedule_install_defaults(reader: Reader, command: str) -> None:
    reader.run(command)
    assert set(schedules_stored(reader)) == {s.name for s in default_schedules()}


def scene_migrate(reader: Reader, command: str) -> None:
    """`tq migrate`: the whole schema in a new database at TQ_DATABASE_URL (twice: idempotent)."""
    path = reader.tmp_path / "fresh.db"
    reader.env["TQ_DATABASE_URL"] = f"sqlite+aiosqlite:///{path}"
    reader.run(command)
    reader.run(command)
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"audit_log", "alembic_version"} <= tables, tables


def scene_search(reader: Reader, command: str) -> None:
    """`tq search "redis streams" --locale en --limit 5` over the demo articles (`tq seed`), each
    indexed by the search family's own indexing (what its index-article job runs)."""
    reader.run("tq seed")
    path = reader.database_url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as db:
        articles = dict(db.execute("SELECT id, title FROM article"))

    async def index_all() -> None:
        try:
            async with sessions(reader.database_url)() as session, session.begin():
                for article_id in articles:
                    await search_index.index_article(session, article_id)
        finally:
            await dispose_engines()

    asyncio.run(index_all())
    out = reader.run(command)
    hits = json.loads(reader.run(command + " --json"))
    assert hits and len(hits) <= 5 and all(hit["locale"] == "en" for hit in hits)
    snippet = hits[0]["snippet"].lower()
    assert "[redis]" in snippet and "[streams]" in snippet, hits[0]  # the query's words, marked
    assert hits[0]["title"][:20] in out


SCENES: dict[str, Callable[[Reader, str], None]] = {
    "search": scene_search,
    "migrate": scene_migrate,
    "queues": scene_queues,
    "schema": scene_schema,
    "jobs": scene_jobs,
    "job": scene_job,
    "job cancel": scene_job_cancel,
    "pause": scene_pause,
    "resume": scene_resume,
    "concurrency": scene_concurrency,
    "dlq list": scene_dlq_list,
    "dlq show": scene_dlq_show,
    "dlq replay": scene_dlq_replay,
    "dlq delete": scene_dlq_delete,
    "dlq purge": scene_dlq_purge,
    "--api dlq list": scene_api_dlq_list,
    "--api dlq replay": scene_dlq_replay,
    "worker": scene_worker,
    "serve": scene_serve,
    "token create": scene_token_create,
    "token revoke": scene_token_revoke,
    "schedule list": scene_schedule_list,
    "schedule add": scene_schedule_add,
    "schedule remove": scene_schedule_remove,
    "schedule suspend": scene_schedule_suspend,
    "schedule run-now": scene_schedule_run_now,
    "schedule install-defaults": scene_schedule_install_defaults,
}

# Shown, but not run here: why (test_every_tq_example_has_a_scenario keeps this list honest).
NOT_RUN = {
    "TQ_DATABASE_URL=postgresql+asyncpg://tq@db/tq tq migrate": (
        "names a PostgreSQL server at host `db` (not here); `tq migrate` as written in docs/admin.md runs"
        " below against SQLite, and on PostgreSQL in tests/families/test_schema_upgrade.py"
    ),
}


@pytest.mark.parametrize(("doc", "command"), [(d, c) for d, c in tq_examples() if c not in NOT_RUN])
def test_tq_example_runs_as_written(doc: str, command: str, redis_url: str, tmp_path: Path) -> None:
    scene = SCENES.get(verb(command))
    assert scene is not None, f"{doc}: no scenario runs `{command}` ({verb(command)!r}): add one to SCENES"
    with ExitStack() as stack:
        scene(Reader(redis_url, tmp_path, stack), command)


def test_every_tq_example_has_a_scenario() -> None:
    examples = tq_examples()
    verbs = {verb(c) for _, c in examples if c not in NOT_RUN}
    assert verbs == set(SCENES), verbs ^ set(SCENES)
    assert {c for _, c in examples} >= set(NOT_RUN)
    replay = 'tq --api https://tq-admin.example.com --token "$TOKEN" dlq replay webhooks:deliver --limit 100'
    assert ("docs/admin.md", replay) in examples
