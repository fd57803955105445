"""``tq job cancel QUEUE ID`` and the progress line of ``tq job`` (issue 18, "Progress and cancel"):
a waiting job is removed, a running one (on a worker process) is cancelled and the command reports
its outcome; unknown and finished jobs are refused with the reason (exit status 2)."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import redis
from support import cancel_worker, helper_command, helper_env
from support.cli import ok, refused
from tq import keys
from tq.producer import SyncProducer
from tq.registry import unregister_queue

Q = "email:send"
EMAIL = json.dumps({"to": "a@example.com", "template": "welcome"})


def test_cancel_a_waiting_job_removes_it(redis_url: str, r: redis.Redis) -> None:
    job_id = ok("enqueue", Q, "send-email", "--data", EMAIL).strip()
    out = ok("job", "cancel", Q, job_id)
    assert out.strip() == f"{job_id} cancelled: it was waiting and was removed; it never runs"
    assert r.xlen(keys.stream(Q)) == 0 and int(r.hget(keys.counters(Q), "cancelled") or 0) == 1
    assert "no job" in refused("job", "cancel", Q, job_id)
    assert "cancelled before it ran" in refused("job", Q, job_id)  # what `tq job` says of it now
    assert "no job" in refused("job", "cancel", Q, "0" * 32)
    assert "unknown queue" in refused("job", "cancel", "no:such", job_id)
    assert "usage: tq job cancel QUEUE ID" in refused("job", "cancel", Q)
    assert "unexpected argument" in refused("job", Q, job_id, "extra")


def test_cancel_a_running_job_on_a_worker_process(redis_url: str, r: redis.Redis) -> None:
    cancel_worker.register()
    proc = subprocess.Popen(
        helper_command("cancel_worker", redis_url, "cli-worker"),
        stdout=subprocess.PIPE,
        text=True,
        env=helper_env(),
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "READY"
        producer = SyncProducer(r, cancel_worker.settings(redis_url))
        job_id = producer.enqueue(cancel_worker.QUEUE, "slow", {"sleep_s": 60})
        deadline = time.monotonic() + 15
        while not r.hget(keys.job(cancel_worker.QUEUE, job_id), "pg"):  # running, progress reported
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        shown = ok("job", cancel_worker.QUEUE, job_id)
        assert "progress: " in shown and "step " in shown
        done = json.loads(ok("job", "cancel", cancel_worker.QUEUE, job_id, "--json"))
        assert done == {
            "queue": cancel_worker.QUEUE,
            "job_id": job_id,
            "outcome": "requested",
            "was": "active",
            "state": "cancelled",
        }
        assert r.hget(cancel_worker.CLEANUP, job_id) == b"cli-worker"
        assert "already cancelled" in refused("job", "cancel", cancel_worker.QUEUE, job_id)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=20)
        unregister_queue(cancel_worker.QUEUE)  # the registry is process-wide
