"""The wire format as a contract (docs/wire-format.md): the document, the engine and the TypeScript
producer (examples/typescript-producer) cannot drift apart, and that producer, run with node against a
real redis-server, enqueues jobs a real worker completes (or dead-letters, for an invalid payload)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
from support import fast_settings, running, wait_for
from tq import dlq, jobs, keys
from tq.envelope import WIRE_FORMAT_VERSION, JobState
from tq.handlers import HandlerRegistry, JobContext
from tq.payloads import SendEmail
from tq.producer import Producer, _Encoder
from tq.registry import get_queue

REPO = Path(__file__).resolve().parents[2]
DOC = (REPO / "docs" / "wire-format.md").read_text()
EXAMPLE = REPO / "examples" / "typescript-producer"
SCRIPT = files("tq") / "scripts" / "enqueue.lua"
Q = "email:send"
EMAIL = {"to": "ada@example.com", "template": "welcome"}
TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
JOB_ID = re.compile(r"^[A-Za-z0-9_.]{22}$")


def _script_sha1() -> str:
    return hashlib.sha1(SCRIPT.read_bytes()).hexdigest()


def _section(title: str) -> str:
    """The text of the doc's section ``## title``, up to the next ``## ``."""
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else len(DOC)]


def _table(text: str, header: str) -> list[list[str]]:
    """The rows of the first Markdown table in ``text`` whose header row starts with ``header``, cells
    stripped of spaces and backticks."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {header} |"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([c.strip().strip("`") for c in line.strip().strip("|").split("|")])
    return rows


# ---- the document against the engine ---------------------------------------------------------------


def test_doc_title_and_script_hash_are_the_engines() -> None:
    assert DOC.splitlines()[0] == f"# tq wire format {WIRE_FORMAT_VERSION}"
    hashes = {(int(v), h) for v, h in _table(_section("The enqueue script"), "Wire format")}
    assert (WIRE_FORMAT_VERSION, _script_sha1()) in hashes, (
        "shared/tq/scripts/enqueue.lua changed: review docs/wire-format.md against it, record its SHA-1 "
        "(and bump WIRE_FORMAT_VERSION when the contract changed)"
    )


def test_doc_keys_and_head_arguments_are_what_the_producer_sends(redis_url: str) -> None:
    enc = _Encoder(fast_settings(redis_url), "0" * 40)
    documented = [row[1] for row in _table(_section("The enqueue script"), "#") if row[0].isdigit()]
    assert documented[:4] == [k.replace(Q, "QUEUE") for k in enc.keys(Q)]
    head = enc.head(get_queue(Q), 1_700_000_000_000)
    argv = _table(_section("The enqueue script").split("**ARGV**")[1], "#")
    assert [r[0] for r in argv] == ["1", "2", "3", "4", "5", "6…"] and len(head) == 5
    assert head[0] == keys.prefix(Q) and head[2] == Q and head[1] == 1_700_000_000_000


def test_doc_entry_fields_are_the_engines() -> None:
    rows = _table(_section("The stream entry"), "Field")
    documented = {r[0] for r in rows}
    # the engine's own list of entry fields (the comment block of tq/envelope.py)
    source = (files("tq") / "envelope.py").read_text()
    block = source.split("# ---- the wire encoding")[1].split("LEGACY_FIELD")[0]
    listed = [ln.lstrip("#").strip() for ln in block.splitlines() if ln.startswith("#   ")]
    engine = {group.split()[0] for ln in listed for group in re.split(r"\s{3,}", ln) if group}
    assert documented == engine
    # each field not written by the enqueue script is written by the script the doc names
    scripts = {"promoter": "promote", "replay": "replay"}
    for field, _meaning, writer in rows:
        if writer != "enqueue":
            assert f"'{field}'" in (files("tq") / "scripts" / f"{scripts[writer]}.lua").read_text(), field


async def test_doc_entry_and_record_fields_are_what_enqueue_writes(redis_client: Any, redis_url: str) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    await p.enqueue(Q, "send-email", EMAIL, idempotency_key="k-now", trace_id=TRACE)
    delayed = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="k-later", trace_id=TRACE, delay=60)
    [(_, entry)] = await redis_client.xrange(keys.stream(Q))
    written = {r[0] for r in _table(_section("The stream entry"), "Field") if r[2] == "enqueue"}
    assert {f.decode() for f in entry} == written
    record = _table(_section("The job record"), "Field")
    assert {f.decode() for f in await redis_client.hgetall(keys.job(Q, delayed))} == {r[0] for r in record}
    entry_id = entry[b"i"].decode()
    assert {f.decode() for f in await redis_client.hgetall(keys.job(Q, entry_id))} == {
        r[0] for r in record if r[2] == "every job"
    }


def test_example_pins_this_version_and_script() -> None:
    wire = (EXAMPLE / "src" / "wire.ts").read_text()
    assert f"export const WIRE_FORMAT_VERSION = {WIRE_FORMAT_VERSION};" in wire
    assert f'export const ENQUEUE_SCRIPT_SHA1 = "{_script_sha1()}";' in wire
    package = json.loads((EXAMPLE / "package.json").read_text())
    pinned = {**package["dependencies"], **package["devDependencies"]}
    assert set(pinned) == {"ioredis", "typescript", "@types/node"}
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in pinned.values()), "exact versions"


# ---- the TypeScript producer, run with node ---------------------------------------------------------


@pytest.fixture(scope="module")
def ts_producer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example compiled with its pinned tsc: its node_modules installed once (``npm ci``) in a
    user cache directory keyed by the lock file, outside the repo; the build in a temp dir."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("node and npm are needed to run the TypeScript producer (apt-get install nodejs npm)")
    lock = (EXAMPLE / "package.json").read_bytes() + (EXAMPLE / "package-lock.json").read_bytes()
    cache_root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tq-tests"
    deps = cache_root / f"typescript-producer-{hashlib.sha256(lock).hexdigest()[:16]}"
    if not (deps / "node_modules" / ".package-lock.json").exists():
        cache_root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="installing-", dir=cache_root))  # same filesystem
        for name in ("package.json", "package-lock.json"):
            shutil.copy(EXAMPLE / name, staging / name)
        subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=staging, check=True, timeout=600
        )
        shutil.rmtree(deps, ignore_errors=True)
        try:
            os.replace(staging, deps)  # whole or not at all: a killed install leaves no half cache
        except OSError:  # another run got there first
            shutil.rmtree(staging, ignore_errors=True)
    build = Path(tmp_path_factory.mktemp("ts-producer"))
    shutil.copytree(EXAMPLE / "src", build / "src")
    shutil.copy(EXAMPLE / "tsconfig.json", build / "tsconfig.json")
    (build / "node_modules").symlink_to(deps / "node_modules", target_is_directory=True)
    tsc = build / "node_modules" / "typescript" / "bin" / "tsc"
    subprocess.run([node, str(tsc), "-p", str(build)], cwd=build, check=True, timeout=120)
    return build / "dist" / "main.js"


async def _node(
    main: Path, redis_url: str, payloads: Sequence[dict[str, Any]], *options: str, script: Path | None = None
) -> tuple[int, list[dict[str, Any]], str]:
    """Run the TypeScript producer; (exit code, its JSON lines, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        "node",
        str(main),
        Q,
        "send-email",
        *(json.dumps(p) for p in payloads),
        "--redis",
        redis_url,
        "--script",
        str(script or SCRIPT),
        *options,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, [json.loads(line) for line in out.decode().splitlines()], err.decode()


async def _ok(main: Path, redis_url: str, payloads: Sequence[dict[str, Any]], *options: str) -> list[Any]:
    code, results, err = await _node(main, redis_url, payloads, *options)
    assert code == 0, err
    return results


async def _counter(client: Any, name: str) -> int:
    return int(await client.hget(keys.counters(Q), name) or 0)


async def test_typescript_entries_are_the_python_producers(
    ts_producer: Path, redis_client: Any, redis_url: str
) -> None:
    p = Producer(redis_client, fast_settings(redis_url))
    await p.enqueue(Q, "send-email", EMAIL, idempotency_key="py-now", trace_id=TRACE)
    py_delayed = await p.enqueue(Q, "send-email", EMAIL, idempotency_key="py-later", trace_id=TRACE, delay=60)
    [ts_now] = await _ok(ts_producer, redis_url, [EMAIL], "--idempotency-key", "ts-now", "--trace-id", TRACE)
    [ts_later] = await _ok(
        ts_producer,
        redis_url,
        [EMAIL],
        "--idempotency-key",
        "ts-later",
        "--trace-id",
        TRACE,
        "--delay-ms",
        "60000",
    )
    assert JOB_ID.match(ts_now["id"]) and JOB_ID.match(ts_later["id"]) and not ts_now["duplicate"]
    (_, py_entry), (_, ts_entry) = await redis_client.xrange(keys.stream(Q))
    assert ts_entry[b"i"].decode() == ts_now["id"]
    assert ts_entry.keys() == py_entry.keys()
    assert ts_entry[b"n"] == py_entry[b"n"] and ts_entry[b"tr"] == py_entry[b"tr"]
    # the payload as each producer sent it: Python's with the model's defaults filled in
    assert json.loads(ts_entry[b"p"]) == EMAIL and json.loads(py_entry[b"p"]).items() >= EMAIL.items()
    py_rec = await redis_client.hgetall(keys.job(Q, py_delayed))
    ts_rec = await redis_client.hgetall(keys.job(Q, ts_later["id"]))
    assert ts_rec.keys() == py_rec.keys() and ts_rec[b"s"] == b"delayed" and json.loads(ts_rec[b"p"]) == EMAIL
    assert await redis_client.zscore(keys.delayed(Q), ts_later["id"]) == int(ts_rec[b"q"])
    assert await _counter(redis_client, "enqueued") == 4


async def test_typescript_jobs_are_completed_by_a_worker(
    ts_producer: Path, redis_client: Any, redis_url: str
) -> None:
    s = fast_settings(redis_url)
    h = HandlerRegistry()
    ran: dict[str, SendEmail] = {}

    @h.register(Q, "send-email")
    async def send(ctx: JobContext, payload: SendEmail) -> dict[str, str]:
        ran[ctx.job_id] = payload
        return {"sent_to": payload.to}

    batch = [{"to": f"user{i}@example.com", "template": "digest"} for i in range(3)]
    async with running(redis_client, s, h):
        plain = await _ok(ts_producer, redis_url, batch)  # one script call for the three
        [keyed] = await _ok(
            ts_producer, redis_url, [EMAIL], "--idempotency-key", "welcome-42", "--trace-id", TRACE
        )
        [again] = await _ok(ts_producer, redis_url, [EMAIL], "--idempotency-key", "welcome-42")
        [later] = await _ok(ts_producer, redis_url, [EMAIL], "--delay-ms", "400")
        [invalid] = await _ok(ts_producer, redis_url, [{"to": "nobody", "template": "welcome"}])
        # a resend of the same id (a reply lost after the script ran) finds the job: written once
        resent = [
            await _ok(ts_producer, redis_url, [EMAIL], "--id", "resent_after_lost_reply") for _ in range(2)
        ]
        await wait_for(lambda: _counter(redis_client, "dead"), what="the invalid job dead-lettered")

        async def all_completed() -> bool:
            return await _counter(redis_client, "completed") == 6

        await wait_for(all_completed, what="the six valid jobs completed")
        # the key is held by a completed job now: the same key still answers the first job
        [after] = await _ok(ts_producer, redis_url, [EMAIL], "--idempotency-key", "welcome-42")

    assert all(JOB_ID.match(r["id"]) and not r["duplicate"] for r in plain)
    assert again == {"id": keyed["id"], "duplicate": True} and after == again
    assert resent == [[{"id": "resent_after_lost_reply", "duplicate": False}]] * 2
    assert await _counter(redis_client, "completed") == 6 and await _counter(redis_client, "enqueued") == 7
    done = [r["id"] for r in plain] + [keyed["id"], later["id"], "resent_after_lost_reply"]
    assert sorted(ran) == sorted(done)
    assert [ran[r["id"]].to for r in plain] == [b["to"] for b in batch]
    assert (await jobs.get_job(redis_client, Q, keyed["id"])).trace_id == TRACE
    for job_id in done:
        assert (await jobs.get_job(redis_client, Q, job_id)).state is JobState.COMPLETED
    rec = await jobs.get_job(redis_client, Q, later["id"])
    assert rec.started_at is not None and rec.enqueued_at is not None
    assert rec.started_at - rec.enqueued_at >= 0.35  # held back for its delay
    [letter] = (await dlq.list_dead(redis_client, Q)).items
    assert letter.job_id == invalid["id"] and letter.error_type == "InvalidPayload" and "to" in letter.error
    assert letter.attempts == 1


async def test_typescript_producer_refuses_another_script(
    ts_producer: Path, redis_client: Any, redis_url: str, tmp_path: Path
) -> None:
    changed = tmp_path / "enqueue.lua"
    changed.write_bytes(SCRIPT.read_bytes().replace(b"'dup:'", b"'duplicate:'"))
    code, out, err = await _node(ts_producer, redis_url, [EMAIL], script=changed)
    assert code == 1 and out == [] and "wire format" in err
    assert await redis_client.exists(keys.stream(Q)) == 0
