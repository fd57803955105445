"""The envelope's wire encoding: what the enqueue script writes into a stream entry (fields named in
``tq.envelope``) parses back into ``Envelope`` with the same values (the consumer's side), for every
kind of input; entries of the legacy layout (the whole envelope as JSON in ``j``) still parse."""

from __future__ import annotations

import base64
import json
import os
import re
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tq.envelope import Envelope, entry_envelope, entry_job_id, new_job_id, record_envelope

TEXTS = ["plain", "ünïcødé ✓ 名前", 'quo"te\\back', "emoji 🚀", "tab\tnew\nline", "\u2028\u2029", "\x1e\x7f"]
PAYLOADS: list[dict[str, Any]] = [
    {},
    {"t0": 1.5},
    {"to": "a@example.com", "nested": {"list": [1, None, True, "ß"]}, "none": None},
    {"text": "ünïcødé \x1f \u0000 🚀", "big": 2**62, "neg": -0.0, "tiny": 1e-300},
]
ENTRY_MS = 1732345678999


def _entry(
    queue: str = "email:send",
    name: str = "send-email",
    payload: dict[str, Any] | None = None,
    enqueued_ms: int = 1732345678123,
    idempotency_key: str | None = None,
    trace_id: str | None = None,
) -> tuple[dict[str, Any], dict[bytes, bytes]]:
    """The values a producer gives, and the entry fields the enqueue script writes for them (the
    payload encoded the way ``tq.producer.payload_json`` does: compact, unicode kept)."""
    job_id = new_job_id()
    payload = {} if payload is None else payload
    payload_json = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    assert "\x1f" not in payload_json  # the enqueue script splits its arguments on the unit separator
    fields = {b"i": job_id, b"n": name, b"p": payload_json, b"t": str(enqueued_ms)}
    if idempotency_key is not None:
        fields[b"k"] = idempotency_key
    if trace_id is not None:
        fields[b"tr"] = trace_id
    given_ = {
        "id": job_id,
        "queue": queue,
        "name": name,
        "payload": payload,
        "enqueued_at": enqueued_ms / 1000,
        "idempotency_key": idempotency_key,
        "trace_id": trace_id,
    }
    return given_, {k: v.encode() for k, v in fields.items()}


def _check(given_: dict[str, Any], fields: dict[bytes, bytes]) -> Envelope:
    env = entry_envelope(fields, given_["queue"], ENTRY_MS)
    assert env.model_dump() == Envelope(**given_).model_dump()
    assert (env.attempt, env.max_attempts, env.replay_of) == (1, None, None)
    assert entry_job_id(fields) == given_["id"]
    return env


def test_new_ids_are_short_unique_and_safe_everywhere() -> None:
    ids = {new_job_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    for job_id in ids:
        assert re.fullmatch(r"[A-Za-z0-9_.]{22}", job_id)  # a key, a URL segment, a CLI argument
        Envelope(id=job_id, queue="q", name="n", payload={}, enqueued_at=1.0)
    # 128 random bits each: every one of the 16 bytes an id encodes takes (nearly) every value
    raw = [base64.b64decode(job_id.translate(str.maketrans("_.", "+/")) + "==") for job_id in ids]
    assert all(len(r) == 16 for r in raw)
    assert all(len({r[k] for r in raw}) > 250 for k in range(16))


@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_new_job_parses_back_with_the_same_values(text: str, payload: dict[str, Any]) -> None:
    _check(*_entry(queue=f"q:{text}", name=f"job-{text}", payload=payload))
    _check(*_entry(payload=payload, idempotency_key=f"key-{text}", trace_id=f"trace-{text}"))


def test_optional_fields_are_left_out_and_defaulted() -> None:
    given_, fields = _entry()
    assert set(fields) == {b"i", b"n", b"p", b"t"}
    env = _check(given_, fields)
    assert env.idempotency_key is None and env.trace_id is None and env.not_before is None


def test_an_entry_without_enqueue_time_takes_its_entry_time() -> None:
    _given, fields = _entry()
    del fields[b"t"]
    assert entry_envelope(fields, "email:send", ENTRY_MS).enqueued_at == ENTRY_MS / 1000


def test_promoted_and_replayed_fields_parse() -> None:
    _given, fields = _entry(payload={"to": "x"})
    fields.update({b"nb": b"1732345680000", b"rp": b"old-id", b"m": b"3", b"a": b"2", b"sx": b"1"})
    env = entry_envelope(fields, "email:send", ENTRY_MS)
    assert (env.not_before, env.replay_of, env.max_attempts) == (1732345680.0, "old-id", 3)


@pytest.mark.parametrize(
    "fields",
    [
        {b"i": b"x", b"n": b"send-email", b"p": b"{not json", b"t": b"1"},
        {b"i": b"x", b"n": b"send-email", b"p": b"[1]", b"t": b"1"},
        {b"n": b"send-email", b"p": b"{}", b"t": b"1"},
        {b"i": b"bad id!", b"n": b"send-email", b"p": b"{}"},
        {b"i": b"x", b"n": b"send-email", b"p": b"[" * 5000 + b"]" * 5000},
        {b"i": b"x", b"n": b"\xff", b"p": b"{}"},
        {b"j": b"{}"},
        {b"j": b"\x00\x01"},
    ],
)
def test_forged_entries_raise_value_error(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(ValueError):
        entry_envelope(fields, "email:send", ENTRY_MS)


def test_legacy_entries_and_records_still_parse() -> None:
    legacy = {
        "id": "a" * 32,
        "queue": "email:send",
        "name": "send-email",
        "payload": {"to": "x"},
        "attempt": 1,
        "idempotency_key": "k",
        "trace_id": None,
        "enqueued_at": 1732345678.123456,
    }
    raw = json.dumps(legacy).encode()
    env = entry_envelope({b"j": raw, b"a": b"2"}, "email:send", ENTRY_MS)
    assert env.model_dump() == Envelope(**legacy).model_dump()
    assert entry_job_id({b"j": raw}) == "a" * 32
    assert record_envelope({b"s": b"failed", b"e": raw})["payload"] == {"to": "x"}


def test_record_envelope_merges_record_and_entry() -> None:
    _given, fields = _entry(payload={"to": "x"}, idempotency_key="k")
    out = record_envelope({b"x": b"1-0"}, fields)
    expected = {
        "payload": {"to": "x"},
        "name": "send-email",
        "idempotency_key": "k",
        "enqueued_at": 1732345678.123,
    }
    assert out == expected


FINITE = st.floats(allow_nan=False, allow_infinity=False)
JSON_SCALARS = st.none() | st.booleans() | st.integers() | FINITE | st.text()


@settings(max_examples=200, derandomize=True, deadline=None)
@given(
    queue=st.text(min_size=1, max_size=40),
    name=st.text(min_size=1, max_size=40),
    payload=st.dictionaries(st.text(max_size=10), JSON_SCALARS, max_size=5),
    key=st.none() | st.text(min_size=1, max_size=50),
    trace=st.none() | st.text(min_size=1, max_size=50),
    enqueued_ms=st.integers(min_value=1, max_value=4_000_000_000_000),
)
def test_new_job_round_trips_any_input(
    queue: str,
    name: str,
    payload: dict[str, Any],
    key: str | None,
    trace: str | None,
    enqueued_ms: int,
) -> None:
    _check(*_entry(queue, name, payload, enqueued_ms, key, trace))


def test_job_ids_are_unique_across_threads_and_a_fork() -> None:
    """Ids are made ahead in batches: threads taking them at once, and a forked child (which
    inherits its parent's unused ids), never hand out the same one."""
    new_job_id()  # the parent holds ids made ahead
    per_thread: list[list[str]] = [[] for _ in range(8)]

    def take(out: list[str]) -> None:
        out.extend(new_job_id() for _ in range(5000))

    threads = [threading.Thread(target=take, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    taken = [i for out in per_thread for i in out]
    assert len(set(taken)) == len(taken) == 40_000

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first 300 ids, then exit without running the test runner's cleanup
        os.write(write, " ".join(new_job_id() for _ in range(300)).encode())
        os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 65536):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = {new_job_id() for _ in range(300)}
    child_ids = set(child.decode().split())
    assert len(child_ids) == 300 and not child_ids & parent
    assert all(len(i) == 22 and "-" not in i and "+" not in i and "/" not in i for i in parent | child_ids)
