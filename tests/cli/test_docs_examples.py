"""Every ``tq enqueue`` the README and docs/ show, run exactly as written (read from the markdown,
so a changed example is tested as changed) with the ``tq`` of this venv, against a real
redis-server and the real family service of its queue (``tq serve FAMILY``: the family's
handlers, a migrated SQLite database, a local SMTP server): each job must complete, none
dead-letter."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from support import wait_until
from support.mailbox import Mailbox, running_mailbox
from support.services import messaging_db, serve_family, stop_process
from tq import keys
from tq.registry import get_queue

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("**/*.md"))]
INLINE = re.compile(r"`(tq enqueue [^`\n]+)`")
FENCE = re.compile(r"^```(?:sh|bash|shell|console)?\n(.*?)^```", re.S | re.M)
TQ = Path(sys.executable).parent / "tq"

pytestmark = pytest.mark.timeout(120)


def enqueue_examples() -> list[tuple[str, str]]:
    """(file, command) for each `tq enqueue` in the docs: inline code, or a line of a shell block."""
    found: list[tuple[str, str]] = []
    for path in DOCS:
        text = path.read_text()
        commands = INLINE.findall(text)
        for block in FENCE.findall(text):
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
