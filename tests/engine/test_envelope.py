"""The envelope's wire encoding: what the producer and a replay write parses back into ``Envelope``
with the same values (the consumer's side), for every kind of input."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tq.envelope import Envelope, new_job_json, replayed_json

TEXTS = ["plain", "ünïcødé ✓ 名前", 'quo"te\\back', "emoji 🚀", "tab\tnew\nline", "\u2028\u2029", "\x1e\x7f"]
PAYLOADS: list[dict[str, Any]] = [
    {},
    {"t0": 1.5},
    {"to": "a@example.com", "nested": {"list": [1, None, True, "ß"]}, "none": None},
    {"text": "ünïcødé \x1f \u0000 🚀", "big": 2**62, "neg": -0.0, "tiny": 1e-300},
]


def _new(
    queue: str = "email:send",
    name: str = "send-email",
    payload: dict[str, Any] | None = None,
    enqueued_at: float = 1732345678.123456,
    idempotency_key: str | None = None,
    trace_id: str | None = None,
    not_before: float | None = None,
) -> tuple[dict[str, Any], str]:
    """The values a producer gives, and the JSON it writes for them (the payload encoded the way
    ``tq.producer.payload_json`` does: compact, unicode kept)."""
    job_id = os.urandom(16).hex()
    payload = {} if payload is None else payload
    payload_json = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    raw = new_job_json(job_id, queue, name, payload_json, enqueued_at, idempotency_key, trace_id, not_before)
    given_ = {
        "id": job_id,
        "queue": queue,
        "name": name,
        "payload": payload,
        "enqueued_at": enqueued_at,
        "idempotency_key": idempotency_key,
        "trace_id": trace_id,
        "not_before": not_before,
    }
    return given_, raw


def _check(given_: dict[str, Any], raw: str) -> Envelope:
    env = Envelope.model_validate_json(raw)
    assert env.model_dump() == Envelope(**given_).model_dump()
    assert (env.attempt, env.max_attempts, env.replay_of) == (1, None, None)
    assert "\x1f" not in raw  # the enqueue script splits its arguments on the unit separator
    return env


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_new_job_parses_back_with_the_same_values(text: str, payload: dict[str, Any]) -> None:
    _check(*_new(queue=f"q:{text}", name=f"job-{text}", payload=payload))
    _check(*_new(payload=payload, idempotency_key=f"key-{text}", trace_id=f"trace-{text}"))


@pytest.mark.parametrize("not_before", [None, 1732345679.5, 1732345678.123457, 1e10, 2.0])
@pytest.mark.parametrize("enqueued_at", [1732345678.123456, 1.0, 0.1 + 0.2, 1e-05, 1e21])
def test_times_parse_back_exactly(enqueued_at: float, not_before: float | None) -> None:
    env = _check(*_new(enqueued_at=enqueued_at, not_before=not_before))
    assert env.enqueued_at == enqueued_at and env.not_before == not_before


def test_a_bulk_chunk_shares_one_time_and_still_encodes_each_exactly() -> None:
    base = 1732345678.25
    for i in range(600):  # more times than the encoder caches
        t = base + i / 1000
        env = _check(*_new(enqueued_at=base, not_before=t))
        assert env.not_before == t


def test_none_fields_are_written_as_null_or_left_out() -> None:
    given_, raw = _new()
    written = json.loads(raw)
    assert written["idempotency_key"] is None and written["trace_id"] is None
    assert "not_before" not in written
    _check(given_, raw)


def test_every_field_left_out_has_a_default() -> None:
    """The encoder states no field the model lacks, and leaves out only fields with defaults."""
    _given, raw = _new(idempotency_key="k", trace_id="t", not_before=2.0e9)
    written = set(json.loads(raw))
    fields = Envelope.model_fields
    assert written <= set(fields)
    assert all(not fields[name].is_required() for name in set(fields) - written)
    assert list(json.loads(raw)) == [name for name in fields if name in written]  # the model's order


FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | FINITE | st.text()


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    queue=st.text(min_size=1, max_size=40),
    name=st.text(min_size=1, max_size=40),
    payload=st.dictionaries(st.text(max_size=10), JSON_SCALARS, max_size=5),
    key=st.none() | st.text(min_size=1, max_size=50),
    trace=st.none() | st.text(min_size=1, max_size=50),
    enqueued_at=st.floats(min_value=0, max_value=4e9),
    delay=st.none() | st.floats(min_value=0.001, max_value=1e6),
)
def test_new_job_round_trips_any_input(
    queue: str,
    name: str,
    payload: dict[str, Any],
    key: str | None,
    trace: str | None,
    enqueued_at: float,
    delay: float | None,
) -> None:
    not_before = None if delay is None else enqueued_at + delay
    _check(*_new(queue, name, payload, enqueued_at, key, trace, not_before))


def test_replay_rewrites_only_the_new_jobs_fields() -> None:
    given_, raw = _new(payload=PAYLOADS[3], idempotency_key="ключ", trace_id="t-1", not_before=1.8e9)
    old = json.loads(raw)
    env = Envelope.model_validate_json(replayed_json(old, "n" * 32, 1.9e9, given_["id"]))
    assert env.model_dump() == {
        **Envelope(**given_).model_dump(),
        "id": "n" * 32,
        "attempt": 1,
        "enqueued_at": 1.9e9,
        "not_before": None,
        "replay_of": given_["id"],
    }
    assert old == json.loads(raw)  # the parsed original is left as it was
