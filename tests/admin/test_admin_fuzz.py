"""Property-based fuzzing of the admin API with schemathesis, from the OpenAPI document the running
service publishes: every operation, with data that fits the schema and data that does not, an
owner's token, real queue names mixed with made-up ones, against the app under uvicorn and the
suite's real redis-server (with dead letters in it). The property: no answer is a server error.
Bounded: a fixed number of examples per operation and mode (about 30 s in all). The same examples
every run, so the suite is repeatable; ``TQ_FUZZ_EXPLORE=1`` draws new ones each run (that is how the
DLQ cursor "0-0" bug was found)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from support.admin import Q, admin_settings, auth, dead_letters, serving, sqlite_database, token
from tq.connection import async_client

EXAMPLES = 25  # per operation and generation mode
EXPLORE = os.environ.get("TQ_FUZZ_EXPLORE") == "1"
STREAMING = "/api/realtime/queue-events"  # an endless stream: covered by test_admin_realtime
QUEUE_NAMES = [Q, "email%3Asend", "ai:content", "webhooks:deliver", "no:such"]
# The enqueue routes (one pair per registry job, test_admin_produce) share one handler: a sample.
PRODUCE = "/api/jobs/"
FUZZED_PRODUCE = {
    f"/api/jobs/{Q}/send-email",
    f"/api/jobs/{Q}/send-email/batch",
    "/api/jobs/ai:content/translate",
}


def test_fuzzing_the_published_openapi_finds_no_server_error(redis_url: str, tmp_path: Path) -> None:
    s = admin_settings(redis_url, sqlite_database(tmp_path), admin_rate_limit=1_000_000)

    async def fill() -> None:
        client = async_client(s.settings)
        try:
            await dead_letters(client, s.settings, 5)
        finally:
            await client.aclose()

    asyncio.run(fill())
    with serving(s) as served:
        schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json")
        headers = auth(token(s))
        operations = [r.ok() for r in schema.get_all_operations()]
        owners = [op for op in operations if not op.path.startswith(PRODUCE)]
        assert len(owners) == 30  # with POST ./jobs/{job_id}/cancel (issue 18)
        operations = owners + [op for op in operations if op.path in FUZZED_PRODUCE]
        assert len(operations) == 30 + len(FUZZED_PRODUCE)
        calls: dict[int, int] = {}
        started = time.monotonic()
        for op in operations:
            if op.path == STREAMING:
                continue
            for mode in schemathesis.GenerationMode:

                @given(case=op.as_strategy(generation_mode=mode), queue=st.sampled_from([None, *QUEUE_NAMES]))
                @settings(
                    max_examples=EXAMPLES,
                    derandomize=not EXPLORE,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def run(case: Any, queue: str | None) -> None:
                    if queue is not None and "queue" in (case.path_parameters or {}):
                        case.path_parameters["queue"] = queue
                    response = case.call_and_validate(
                        base_url=served.url, headers=headers, checks=[not_a_server_error], timeout=10
                    )
                    calls[response.status_code] = calls.get(response.status_code, 0) + 1

                run()
        elapsed = time.monotonic() - started
    assert not any(status >= 500 for status in calls)
    assert sum(calls.values()) >= 15 * EXAMPLES  # it did call, for every operation
    assert {200, 404, 422} <= set(calls)  # real successes, unknown queues and bad input all reached
    print(f"fuzzing: {sum(calls.values())} calls in {elapsed:.1f} s, statuses {dict(sorted(calls.items()))}")
