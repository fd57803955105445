"""The messaging family through the real engine: a real local SMTP server (aiosmtpd), a local SMS
provider (http.server), the suite's Redis, SQLite and PostgreSQL.

send-email renders (autoescaped HTML), delivers and logs; unknown templates and missing variables
dead-letter at once; SMTP 5xx dead-letters at once, 4xx retries; process-email-queue enqueues
each pending row once; send-otp stores only a hash, verifies, never logs the code, honours the
cool-down, and treats the SMS provider's 200 / 400 / 503 as sent / rejected / retried.
"""

from __future__ import annotations

import email
import email.policy
import json
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
import tq_services.messaging.handlers  # noqa: F401  (registers the handlers)
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from support import fast_settings, http_server, running, settled_job, tiny_retry, wait_for
from support.mailbox import serving_smtp
from support.settings import clear_settings_caches
from tq import dlq, jobs, keys
from tq.db import make_sessionmaker
from tq.envelope import JobState
from tq.handlers import default_handlers
from tq.producer import Producer
from tq.settings import Settings
from tq_services import load_handlers
from tq_services.messaging.models import EmailLog, EmailQueue, OtpLog
from tq_services.messaging.otp import check_code, hash_code, verify_otp
from tq_services.messaging.render import render_email
from tq_services.store import dispose_engines

EQ = "email:send"
OQ = "otp:send"
SMS_TOKEN = "sms-test-token"


# ---- a real SMTP server -------------------------------------------------------------------------
@dataclass
class MailHandler:
    """aiosmtpd handler: keeps every delivered message; ``refuse[rcpt] = [reply, n]`` answers
    ``reply`` to RCPT for that recipient ``n`` more times (-1: always)."""

    messages: list[EmailMessage] = field(default_factory=list)
    refuse: dict[str, list[Any]] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        rule = self.refuse.get(address)
        if rule is not None and rule[1] != 0:
            rule[1] -= 1
            self.refused.append(address)
            return str(rule[0])
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        self.messages.append(msg)
        return "250 2.0.0 queued as test"


@pytest.fixture
def smtp() -> Iterator[tuple[MailHandler, int]]:
    handler = MailHandler()
    with serving_smtp(handler) as port:
        yield handler, port


# ---- a local SMS provider -----------------------------------------------------------------------
@dataclass
class SmsProvider:
    """Answers each POST with the next status of ``plan`` (the last one repeats); a 400 echoes
    the request body, as some providers do."""

    plan: list[int] = field(default_factory=lambda: [200])
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    url: str = ""


@pytest.fixture
def sms() -> Iterator[SmsProvider]:
    provider = SmsProvider()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            provider.requests.append((self.headers.get("authorization", ""), json.loads(body)))
            status = provider.plan.pop(0) if len(provider.plan) > 1 else provider.plan[0]
            reply = body if status == 400 else json.dumps({"id": len(provider.requests)}).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    with http_server(Handler) as base:
        provider.url = base + "/send"
        yield provider


# ---- settings: the handlers read their owners' (environment), the worker gets fast ones ---------
@pytest.fixture
async def env(
    database_url: str,
    redis_url: str,
    smtp: tuple[MailHandler, int],
    sms: SmsProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Settings]:
    values = {
        "TQ_SMTP_HOST": "127.0.0.1",
        "TQ_SMTP_PORT": str(smtp[1]),
        "TQ_SMTP_TLS": "none",
        "TQ_SMTP_FROM": "Teknav <no-reply@teknav.test>",
        "TQ_SMTP_TIMEOUT_S": "5",
        "TQ_OTP_LENGTH": "10",  # long enough that finding it in the logs by chance is impossible
        "TQ_OTP_COOLDOWN_S": "60",
        "TQ_SMS_PROVIDER_URL": sms.url,
        "TQ_SMS_PROVIDER_TOKEN": SMS_TOKEN,
        "TQ_SMS_TIMEOUT_S": "5",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    clear_settings_caches()
    yield fast_settings(redis_url, queues={EQ: tiny_retry(attempts=4), OQ: tiny_retry(attempts=3)})
    clear_settings_caches()
    await dispose_engines()


async def _settled(client: Any, queue: str, job_id: str) -> jobs.JobRecord:
    return await settled_job(client, queue, job_id)


async def _rows(engine: AsyncEngine, model: Any) -> list[Any]:
    async with make_sessionmaker(engine)() as session:
        return list((await session.execute(select(model).order_by(model.id))).scalars())


def _parts(msg: EmailMessage) -> tuple[str, str]:
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


async def _statuses(engine: AsyncEngine, ids: list[int], status: str = "sent") -> bool:
    return all(r.status == status for r in await _rows(engine, EmailQueue) if r.id in ids)


def _our_logs(caplog: pytest.LogCaptureFixture) -> str:
    """Every record at DEBUG and up but the test's own SMTP server's (aiosmtpd logs what it
    receives, as a mail server does): the engine, the handlers, aiosmtplib, httpx, the drivers."""
    return "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}" for r in caplog.records if r.name != "mail.log"
    )


# ---- schema -------------------------------------------------------------------------------------
async def test_messaging_tables_enforce_their_states(db_engine: AsyncEngine) -> None:
    sm = make_sessionmaker(db_engine)
    async with sm() as session, session.begin():
        session.add(EmailQueue(to="a@example.com", template="welcome", variables={"name": "A"}))
    [row] = await _rows(db_engine, EmailQueue)
    assert (row.status, row.attempts, row.locale, row.variables) == ("pending", 0, "en", {"name": "A"})
    assert row.created_at.tzinfo is not None
    with pytest.raises(IntegrityError):
        async with sm() as session, session.begin():
            session.add(EmailQueue(to="a@example.com", template="welcome", status="lost"))


def test_templates_autoescape_html_only_and_fall_back_by_locale() -> None:
    r = render_email("welcome", "en", {"name": "<b>A & B</b>"})
    assert r.subject == "Welcome to Teknav, <b>A & B</b>" and "Hello <b>A & B</b>," in r.text
    assert "&lt;b&gt;A &amp; B&lt;/b&gt;" in r.html and "<b>A" not in r.html
    assert render_email("welcome", "fa", {"name": "Ali"}).subject == "Ali، به تکناو خوش آمدید"
    assert render_email("welcome", "fa-IR", {"name": "Ali"}).locale == "fa"
    assert render_email("welcome", "de", {"name": "Ali"}).locale == "en"
    stored = hash_code("123456")
    assert stored.startswith("sha256$") and "123456" not in stored.split("$", 2)[1]
    assert check_code("123456", stored) and not check_code("123457", stored)
    assert hash_code("123456") != stored  # salted per code


def test_load_handlers_imports_existing_families_only() -> None:
    assert load_handlers(["messaging", "nosuchfamily"]) == ["tq_services.messaging.handlers"]
    assert "tq_services.messaging.handlers" in load_handlers()
    assert (EQ, "send-email") in default_handlers and (EQ, "process-email-queue") in default_handlers
    assert (OQ, "send-otp") in default_handlers


# ---- send-email ---------------------------------------------------------------------------------
async def test_send_email_renders_delivers_and_logs(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, smtp: tuple[MailHandler, int]
) -> None:
    mail, _ = smtp
    p = Producer(redis_client, env)
    evil = "<script>alert(1)</script>"
    async with running(redis_client, env, default_handlers, EQ):
        job_id = await p.enqueue(
            EQ,
            "send-email",
            {"to": "reader@example.com", "template": "welcome", "variables": {"name": evil}},
            trace_id="trace-mail",
        )
        fa_id = await p.enqueue(
            EQ,
            "send-email",
            {"to": "fa@example.com", "template": "welcome", "locale": "fa", "variables": {"name": "Ali"}},
        )
        rec = await _settled(redis_client, EQ, job_id)
        fa_rec = await _settled(redis_client, EQ, fa_id)
    assert rec.state is JobState.COMPLETED and rec.attempts == 1, rec
    assert fa_rec.state is JobState.COMPLETED
    by_to = {m["To"]: m for m in mail.messages}
    msg = by_to["reader@example.com"]
    assert msg["Subject"] == f"Welcome to Teknav, {evil}"
    assert msg["From"] == "Teknav <no-reply@teknav.test>"
    text, html = _parts(msg)
    assert f"Hello {evil}," in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "<script>" not in html
    assert by_to["fa@example.com"]["Subject"] == "Ali، به تکناو خوش آمدید"
    assert 'dir="rtl"' in _parts(by_to["fa@example.com"])[1]

    logs = {row.job_id: row for row in await _rows(db_engine, EmailLog)}
    row = logs[job_id]
    assert (row.status, row.to, row.template, row.locale, row.trace_id) == (
        "sent",
        "reader@example.com",
        "welcome",
        "en",
        "trace-mail",
    )
    assert row.subject == f"Welcome to Teknav, {evil}" and row.smtp_response == "2.0.0 queued as test"
    assert row.error is None and logs[fa_id].locale == "fa"


async def test_unknown_template_and_missing_variable_dead_letter_at_once(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, smtp: tuple[MailHandler, int]
) -> None:
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, EQ):
        unknown = await p.enqueue(EQ, "send-email", {"to": "a@example.com", "template": "no-such-template"})
        missing = await p.enqueue(EQ, "send-email", {"to": "b@example.com", "template": "welcome"})
        for job_id in (unknown, missing):
            assert (await _settled(redis_client, EQ, job_id)).state is JobState.DEAD
    letters = {d.job_id: d for d in (await dlq.list_dead(redis_client, EQ)).items}
    assert letters[unknown].error_type == "TemplateProblem" and letters[unknown].attempts == 1
    assert "unknown template 'no-such-template'" in letters[unknown].error
    assert letters[missing].error_type == "TemplateProblem" and letters[missing].attempts == 1
    assert "missing variable in template 'welcome'" in letters[missing].error
    assert "'name' is undefined" in letters[missing].error
    assert int(await redis_client.hget(keys.counters(EQ), "retried") or 0) == 0
    assert smtp[0].messages == []
    logs = {row.job_id: row for row in await _rows(db_engine, EmailLog)}
    assert logs[unknown].status == "failed" and "no-such-template" in logs[unknown].error
    assert logs[missing].status == "failed" and "'name' is undefined" in logs[missing].error


async def test_smtp_550_dead_letters_at_once_and_451_is_retried(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, smtp: tuple[MailHandler, int]
) -> None:
    mail, _ = smtp
    mail.refuse["gone@example.com"] = ["550 5.1.1 no such mailbox", -1]
    mail.refuse["busy@example.com"] = ["451 4.3.0 try again later", 2]
    sm = make_sessionmaker(db_engine)
    async with sm() as session, session.begin():
        queued = EmailQueue(
            to="gone@example.com", template="welcome", variables={"name": "G"}, status="queued"
        )
        session.add(queued)
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, EQ):
        gone = await p.enqueue(
            EQ,
            "send-email",
            {
                "to": "gone@example.com",
                "template": "welcome",
                "variables": {"name": "G"},
                "email_queue_id": queued.id,
            },
        )
        busy = await p.enqueue(
            EQ, "send-email", {"to": "busy@example.com", "template": "welcome", "variables": {"name": "B"}}
        )
        gone_rec = await _settled(redis_client, EQ, gone)
        busy_rec = await _settled(redis_client, EQ, busy)
    assert gone_rec.state is JobState.DEAD and gone_rec.attempts == 1
    [letter] = (await dlq.list_dead(redis_client, EQ)).items
    assert letter.error_type == "DeliveryRejected" and "SMTP 550" in letter.error
    assert "no such mailbox" in letter.error
    assert busy_rec.state is JobState.COMPLETED and busy_rec.attempts == 3
    assert mail.refused.count("busy@example.com") == 2 and mail.refused.count("gone@example.com") == 1
    assert [m["To"] for m in mail.messages] == ["busy@example.com"]

    [row] = await _rows(db_engine, EmailQueue)
    assert (row.status, row.attempts) == ("failed", 1) and "SMTP 550" in (row.last_error or "")
    logs = await _rows(db_engine, EmailLog)
    assert [(r.status, r.email_queue_id) for r in logs if r.job_id == gone] == [("failed", queued.id)]
    assert [r.status for r in logs if r.job_id == busy] == ["deferred", "deferred", "sent"]
    assert all("SMTP 451" in (r.error or "") for r in logs if r.status == "deferred")


async def test_process_email_queue_enqueues_each_pending_row_once(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, smtp: tuple[MailHandler, int]
) -> None:
    mail, _ = smtp
    sm = make_sessionmaker(db_engine)
    async with sm() as session, session.begin():
        session.add_all(
            [
                EmailQueue(to=f"r{i}@example.com", template="welcome", variables={"name": f"R{i}"})
                for i in range(3)
            ]
        )
        session.add(EmailQueue(to="not-an-address", template="welcome", variables={"name": "X"}))
        session.add(
            EmailQueue(to="done@example.com", template="welcome", variables={"name": "D"}, status="sent")
        )
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, EQ):
        first = await _settled(redis_client, EQ, await p.enqueue(EQ, "process-email-queue", {"limit": 10}))
        await wait_for(lambda: _statuses(db_engine, [1, 2, 3]), what="rows 1-3 sent")
        second = await _settled(redis_client, EQ, await p.enqueue(EQ, "process-email-queue", {}))
        # a row put back to pending after it was sent: its idempotency key still holds
        async with sm() as session, session.begin():
            row = await session.get(EmailQueue, 1)
            assert row is not None and row.status == "sent"
            row.status = "pending"
        third = await _settled(redis_client, EQ, await p.enqueue(EQ, "process-email-queue", {}))
    assert first.state is JobState.COMPLETED
    assert first.result == {"enqueued": 3, "duplicates": 0, "invalid": [4]}
    assert second.result == {"enqueued": 0, "duplicates": 0, "invalid": []}
    assert third.result == {"enqueued": 0, "duplicates": 1, "invalid": []}
    assert sorted(m["To"] for m in mail.messages) == [f"r{i}@example.com" for i in range(3)]
    rows = await _rows(db_engine, EmailQueue)
    assert [(r.id, r.status) for r in rows] == [
        (1, "queued"),
        (2, "sent"),
        (3, "sent"),
        (4, "failed"),
        (5, "sent"),
    ]
    assert "invalid row" in (rows[3].last_error or "")
    sent_logs = [r for r in await _rows(db_engine, EmailLog) if r.status == "sent"]
    assert sorted(r.email_queue_id for r in sent_logs) == [1, 2, 3]


# ---- send-otp -----------------------------------------------------------------------------------
async def test_otp_by_email_verifies_against_the_hash_and_never_logs_the_code(
    env: Settings,
    redis_client: Any,
    db_engine: AsyncEngine,
    smtp: tuple[MailHandler, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    p = Producer(redis_client, env)
    async with running(redis_client, env, default_handlers, OQ):
        job_id = await p.enqueue(
            OQ, "send-otp", {"user_id": 7, "channel": "email", "destination": "u7@example.com"}
        )
        rec = await _settled(redis_client, OQ, job_id)
    assert rec.state is JobState.COMPLETED, rec
    [msg] = smtp[0].messages
    assert msg["Subject"] == "Your Teknav code"
    text, html = _parts(msg)
    match = re.search(r"code is (\d{10})\.", text)
    assert match is not None, text
    code = match.group(1)
    assert f"<strong>{code}</strong>" in html

    [row] = await _rows(db_engine, OtpLog)
    assert (row.user_id, row.channel, row.purpose, row.status, row.attempts, row.max_attempts) == (
        7,
        "email",
        "login",
        "sent",
        0,
        5,
    )
    assert row.code_hash.startswith("sha256$") and check_code(code, row.code_hash)
    assert row.expires_at > row.created_at
    assert rec.result is not None and rec.result["otp_id"] == row.id
    assert code not in json.dumps(rec.result)
    [log_row] = await _rows(db_engine, EmailLog)
    assert (log_row.template, log_row.status) == ("otp", "sent") and code not in (log_row.subject or "")

    sm = make_sessionmaker(db_engine)
    async with sm() as session:
        assert await verify_otp(session, 7, "login", "0000000000") is False
        assert await verify_otp(session, 7, "signup", code) is False  # another purpose
        assert await verify_otp(session, 7, "login", code) is True
        assert await verify_otp(session, 7, "login", code) is False  # used
    [row] = await _rows(db_engine, OtpLog)
    assert (row.status, row.attempts) == ("verified", 2)
    assert any(r.name == "tq.messaging" for r in caplog.records), "the handler logs"
    assert code not in _our_logs(caplog)


async def test_otp_cool_down_refuses_a_second_request(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, smtp: tuple[MailHandler, int]
) -> None:
    p = Producer(redis_client, env)
    otp = {"user_id": 8, "channel": "email", "destination": "u8@example.com"}
    async with running(redis_client, env, default_handlers, OQ):
        first = await _settled(redis_client, OQ, await p.enqueue(OQ, "send-otp", otp))
        second = await _settled(redis_client, OQ, await p.enqueue(OQ, "send-otp", otp))
        other = await _settled(redis_client, OQ, await p.enqueue(OQ, "send-otp", {**otp, "purpose": "reset"}))
    assert first.state is JobState.COMPLETED and other.state is JobState.COMPLETED
    assert second.state is JobState.DEAD and second.attempts == 1
    [letter] = (await dlq.list_dead(redis_client, OQ)).items
    assert letter.error_type == "CoolDown" and letter.error.startswith("cool-down")
    assert "user 8 (login)" in letter.error
    assert len(smtp[0].messages) == 2
    assert sorted(r.purpose for r in await _rows(db_engine, OtpLog)) == ["login", "reset"]


async def test_otp_by_sms_200_400_503(
    env: Settings,
    redis_client: Any,
    db_engine: AsyncEngine,
    sms: SmsProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    p = Producer(redis_client, env)

    def otp(user_id: int) -> dict[str, Any]:
        return {"user_id": user_id, "channel": "sms", "destination": f"+1555010{user_id}"}

    async with running(redis_client, env, default_handlers, OQ):
        sms.plan = [200]
        ok = await _settled(redis_client, OQ, await p.enqueue(OQ, "send-otp", otp(1)))
        sms.plan = [400]
        rejected = await _settled(redis_client, OQ, await p.enqueue(OQ, "send-otp", otp(2)))
        sms.plan = [503, 200]
        retried = await _settled(redis_client, OQ, await p.enqueue(OQ, "send-otp", otp(3)))

    assert ok.state is JobState.COMPLETED and ok.attempts == 1
    assert rejected.state is JobState.DEAD and rejected.attempts == 1
    assert retried.state is JobState.COMPLETED and retried.attempts == 2
    assert [body["to"] for _, body in sms.requests] == ["+15550101", "+15550102", "+15550103", "+15550103"]
    assert all(auth == f"Bearer {SMS_TOKEN}" for auth, _ in sms.requests)
    codes = []
    for _, body in sms.requests:
        match = re.search(r"code: (\d{10}) ", body["message"])
        assert match is not None, body
        codes.append(match.group(1))
    assert len(set(codes)) == 4  # a fresh code per attempt

    [letter] = (await dlq.list_dead(redis_client, OQ)).items
    assert letter.error_type == "DeliveryRejected" and "SMS provider answered 400" in letter.error
    assert "******" in letter.error and codes[1] not in letter.error  # the echoed code is blanked

    rows = await _rows(db_engine, OtpLog)
    assert [(r.user_id, r.status) for r in rows] == [(1, "sent"), (2, "failed"), (3, "failed"), (3, "sent")]
    assert check_code(codes[0], rows[0].code_hash) and check_code(codes[3], rows[3].code_hash)
    async with make_sessionmaker(db_engine)() as session:
        assert await verify_otp(session, 3, "login", codes[2]) is False  # the failed attempt's code
        assert await verify_otp(session, 3, "login", codes[3]) is True
    logs = _our_logs(caplog)
    for code in codes:
        assert code not in logs


async def test_smtp_send_is_a_child_span_of_the_run_when_tracing_is_on(
    env: Settings, redis_client: Any, db_engine: AsyncEngine, smtp: tuple[MailHandler, int]
) -> None:
    from opentelemetry.trace import SpanKind
    from support.tracing import in_memory_tracing

    with in_memory_tracing() as exporter:
        p = Producer(redis_client, env)
        async with running(redis_client, env, default_handlers, EQ):
            job_id = await p.enqueue(
                EQ,
                "send-email",
                {"to": "traced@example.com", "template": "welcome", "variables": {"name": "T"}},
            )
            assert (await _settled(redis_client, EQ, job_id)).state is JobState.COMPLETED
        spans = exporter.get_finished_spans()
    (run,) = [s for s in spans if s.kind == SpanKind.CONSUMER]
    (send,) = [s for s in spans if s.name == "smtp send"]
    assert send.kind == SpanKind.CLIENT
    assert send.parent is not None and send.parent.span_id == run.context.span_id
    assert send.attributes["server.address"] == "127.0.0.1"
    assert send.attributes["server.port"] == smtp[1]
    assert [m["To"] for m in smtp[0].messages] == ["traced@example.com"]
    (log,) = [row for row in await _rows(db_engine, EmailLog) if row.job_id == job_id]
    assert log.trace_id is not None and log.trace_id.startswith("00-")  # the run's traceparent
