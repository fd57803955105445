"""``tq schedule``: add (validated, nothing written when refused), list, suspend/resume, run-now,
remove, and install-defaults (the families' periodic jobs)."""

from __future__ import annotations

import pytest
import redis
from support.cli import ok, ok_json, refused
from tq import keys
from tq.envelope import entry_envelope


def test_add_list_suspend_resume_run_now_remove(redis_url: str, r: redis.Redis) -> None:
    out = ok(
        "schedule", "add", "nightly-rollup", "analytics:process", "rollup-daily",
        "--cron", "15 0 * * *", "--tz", "Europe/Berlin", "--data", '{"day": "$yesterday"}',
        "--policy", "Forbid", "--deadline", "3600",
    )  # fmt: skip
    assert "nightly-rollup" in out and "15 0 * * *" in out
    ok("schedule", "add", "mails", "email:send", "process-email-queue", "--every", "60")
    [mails, nightly] = ok_json("schedule", "list")
    assert nightly["name"] == "nightly-rollup" and nightly["cron"] == "15 0 * * *"
    assert nightly["timeZone"] == "Europe/Berlin" and nightly["concurrencyPolicy"] == "Forbid"
    assert nightly["startingDeadlineSeconds"] == 3600 and nightly["payload"] == {"day": "$yesterday"}
    assert nightly["nextScheduleTime"] and nightly["lastScheduleTime"] is None
    assert mails["intervalSeconds"] == 60 and mails["suspend"] is False
    assert "every" in ok("schedule", "list")  # the table (its width follows the terminal)

    ok("schedule", "suspend", "mails")
    assert ok_json("schedule", "list")[0]["suspend"] is True
    ok("schedule", "resume", "mails")
    assert ok_json("schedule", "list")[0]["suspend"] is False

    job_id = ok("schedule", "run-now", "nightly-rollup").strip()
    [(_eid, fields)] = r.xrange(keys.stream("analytics:process"))
    payload = entry_envelope(fields, "analytics:process", 0).payload
    assert payload["day"] != "$yesterday" and len(payload["day"]) == 10  # filled in: an ISO date
    assert ok_json("schedule", "list")[1]["lastJobId"] == job_id

    ok("schedule", "remove", "mails")
    assert [s["name"] for s in ok_json("schedule", "list")] == ["nightly-rollup"]
    assert not r.exists(keys.schedule_state("mails"))
    assert "unknown schedule 'mails'" in refused("schedule", "remove", "mails")
    assert "unknown schedule 'nope'" in refused("schedule", "run-now", "nope")
    assert "unknown schedule 'nope'" in refused("schedule", "suspend", "nope")


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["--cron", "0 2 * * *", "--data", '{"day": "yesterday"}'], "day"),  # the job's model refuses it
        (["--cron", "0 2 * * *"], "day: Field required"),
        (["--cron", "0 2 * *"], "invalid cron expression"),
        (["--every", "60", "--cron", "0 2 * * *", "--data", '{"day": "$today"}'], "exactly one"),
        (["--cron", "0 2 * * *", "--tz", "Nowhere/City", "--data", '{"day": "$today"}'], "unknown time zone"),
        (
            ["--cron", "0 2 * * *", "--policy", "Overlap", "--data", '{"day": "$today"}'],
            "one of Allow, Forbid, Replace",
        ),
        (["--every", "60", "--data", "{"], "not valid JSON"),
    ],
)
def test_add_refuses_bad_input_and_writes_nothing(
    redis_url: str, r: redis.Redis, args: list[str], reason: str
) -> None:
    assert reason in refused("schedule", "add", "bad", "analytics:process", "rollup-daily", *args)
    assert not r.keys("tq:schedule*")


def test_add_refuses_an_unknown_job(redis_url: str, r: redis.Redis) -> None:
    assert "unknown job 'nope'" in refused("schedule", "add", "bad", "email:send", "nope", "--every", "60")
    assert not r.keys("tq:schedule*")


def test_install_defaults_declares_the_families_periodic_jobs(redis_url: str) -> None:
    out = ok("schedule", "install-defaults")
    assert "installed 6 schedules" in out
    rows = {s["name"]: s for s in ok_json("schedule", "list")}
    jobs = {(s["queue"], s["job"], s["cron"] or s["intervalSeconds"]) for s in rows.values()}
    assert jobs == {
        ("analytics:process", "rollup-daily", "15 0 * * *"),
        ("analytics:process", "process-events", 60),
        ("analytics:snapshot", "snapshot-dashboard", 300),
        ("email:send", "process-email-queue", 60),
    }
    assert rows["analytics-rollup-daily"]["payload"] == {"day": "$yesterday"}
    assert {
        rows[f"analytics-snapshot-{d}"]["payload"]["dashboard"] for d in ("overview", "content", "search")
    }
    ok("schedule", "suspend", "analytics-process-events")
    ok("schedule", "install-defaults")  # again: idempotent, and a suspension stays
    rows = {s["name"]: s for s in ok_json("schedule", "list")}
    assert len(rows) == 6 and rows["analytics-process-events"]["suspend"] is True


def test_defaults_and_the_cli_leave_a_schedule_managed_by_a_jobschedule(
    redis_url: str, r: redis.Redis
) -> None:
    """The ownership rule: what the operator wrote from a JobSchedule is the resource's; the CLI's
    defaults do not overwrite it, and add/remove refuse it (remove --force cleans up)."""
    ok("schedule", "install-defaults")
    owner = "JobSchedule tq/email-process-email-queue"
    r.hset(keys.schedule_state("email-process-email-queue"), "owner", owner)  # as the operator marks it
    r.hset(
        keys.SCHEDULES,
        "email-process-email-queue",
        r.hget(keys.SCHEDULES, "email-process-email-queue").replace(b'"limit":100', b'"limit":7'),
    )
    out = ok("schedule", "install-defaults")
    assert "installed 5 schedules" in out and "email-process-email-queue" in out.splitlines()[-1]
    rows = {s["name"]: s for s in ok_json("schedule", "list")}
    assert rows["email-process-email-queue"]["payload"] == {"limit": 7}  # the resource's, not the default
    assert rows["email-process-email-queue"]["managedBy"] == owner
    assert rows["analytics-process-events"]["managedBy"] is None
    add = (
        "schedule",
        "add",
        "email-process-email-queue",
        "email:send",
        "process-email-queue",
        "--every",
        "5",
    )
    assert f"managed by {owner}" in refused(*add)
    assert f"managed by {owner}" in refused("schedule", "remove", "email-process-email-queue")
    ok("schedule", "suspend", "email-process-email-queue")  # an operational switch stays open
    ok("schedule", "remove", "email-process-email-queue", "--force")
    assert "email-process-email-queue" not in {s["name"] for s in ok_json("schedule", "list")}
