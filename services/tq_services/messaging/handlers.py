"""Handlers of the messaging family, registered on the process-wide ``tq.handlers.default_handlers``.

Importing this module registers them (``tq_services.load_handlers(["messaging"])`` does it for
``tq worker`` / ``tq serve messaging``). Every handler commits its rows before it returns or
raises, so a job is acked only after its EmailLog / EmailQueue / OtpLog rows exist.
"""

from __future__ import annotations

import logging
import math
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from tq import keys
from tq.errors import NonRetryableError
from tq.handlers import JobContext, default_handlers
from tq.models import utcnow
from tq.payloads import ProcessEmailQueue, SendEmail, SendOtp
from tq.producer import JobRequest, Producer
from tq.settings import get_settings

from tq_services.messaging.delivery import send_sms, send_smtp
from tq_services.messaging.errors import CoolDown, DeliveryRejected
from tq_services.messaging.models import EmailLog, EmailQueue, OtpLog
from tq_services.messaging.otp import hash_code, new_code
from tq_services.messaging.render import Rendered, render_email, render_sms
from tq_services.messaging.settings import get_messaging_settings
from tq_services.store import sessions

log = logging.getLogger("tq.messaging")

EMAIL_QUEUE = "email:send"
OTP_QUEUE = "otp:send"


def _email_log(
    ctx: JobContext,
    *,
    to: str,
    template: str,
    locale: str,
    status: str,
    subject: str | None = None,
    smtp_response: str | None = None,
    error: str | None = None,
    email_queue_id: int | None = None,
) -> EmailLog:
    return EmailLog(
        email_queue_id=email_queue_id,
        to=to,
        template=template,
        locale=locale,
        subject=subject,
        status=status,
        smtp_response=smtp_response,
        error=error,
        job_id=ctx.job_id,
        trace_id=ctx.trace_id,
    )


async def _settle_email(
    session: AsyncSession,
    ctx: JobContext,
    payload: SendEmail,
    *,
    status: str,
    queue_status: str,
    rendered: Rendered | None = None,
    smtp_response: str | None = None,
    error: str | None = None,
) -> None:
    """The EmailLog row and the EmailQueue status change, in one transaction."""
    async with session.begin():
        session.add(
            _email_log(
                ctx,
                to=payload.to,
                template=payload.template,
                locale=rendered.locale if rendered else payload.locale,
                status=status,
                subject=rendered.subject if rendered else None,
                smtp_response=smtp_response,
                error=error,
                email_queue_id=payload.email_queue_id,
            )
        )
        if payload.email_queue_id is not None:
            await session.execute(
                update(EmailQueue)
                .where(EmailQueue.id == payload.email_queue_id)
                .values(status=queue_status, last_error=error, updated_at=utcnow())
            )


@default_handlers.register(EMAIL_QUEUE, "send-email")
async def send_email(ctx: JobContext, payload: SendEmail) -> dict[str, Any]:
    settings = get_settings()
    messaging = get_messaging_settings()
    async with sessions(settings.database_url)() as session:
        if payload.email_queue_id is not None:
            async with session.begin():
                row = await session.get(EmailQueue, payload.email_queue_id, with_for_update=True)
                if row is None:
                    raise DeliveryRejected(f"email_queue row {payload.email_queue_id} does not exist")
                if row.status == "sent":  # a redelivery after the row was settled: never send twice
                    return {"email_queue_id": row.id, "skipped": "already sent"}
                row.status = "sending"
                row.attempts += 1
                row.updated_at = utcnow()

        rendered: Rendered | None = None
        try:
            rendered = render_email(payload.template, payload.locale, payload.variables)
            response = await send_smtp(messaging, payload.to, rendered)
        except Exception as exc:
            # NonRetryableError (TemplateProblem, DeliveryRejected) or the last attempt: failed for good
            final = ctx.is_last_failure(exc)
            await _settle_email(
                session,
                ctx,
                payload,
                status="failed" if final else "deferred",
                queue_status="failed" if final else "queued",
                rendered=rendered,
                error=str(exc),
            )
            log.warning(
                "email %s to %s %s (attempt %d): %s",
                ctx.job_id,
                payload.to,
                "failed" if final else "deferred",
                ctx.attempt,
                exc,
            )
            raise
        await _settle_email(
            session,
            ctx,
            payload,
            status="sent",
            queue_status="sent",
            rendered=rendered,
            smtp_response=response,
        )
    log.info("email %s sent to %s (%s/%s)", ctx.job_id, payload.to, payload.template, rendered.locale)
    return {"to": payload.to, "template": payload.template, "locale": rendered.locale, "smtp": response}


@default_handlers.register(EMAIL_QUEUE, "process-email-queue")
async def process_email_queue(ctx: JobContext, payload: ProcessEmailQueue) -> dict[str, Any]:
    """Turn up to ``limit`` pending EmailQueue rows into send-email jobs (idempotency key
    ``email-queue:<id>``, so a row is enqueued once even if this runs twice) and mark them queued.
    Rows that cannot make a valid job are marked failed with the reason."""
    settings = get_settings()
    requests: list[JobRequest] = []
    enqueued: list[int] = []
    invalid: list[int] = []
    async with sessions(settings.database_url)() as session, session.begin():
        rows = (
            (
                await session.execute(
                    select(EmailQueue)
                    .where(EmailQueue.status == "pending")
                    .order_by(EmailQueue.id)
                    .limit(payload.limit)
                    .with_for_update(skip_locked=True)
                )
            )
            .scalars()
            .all()
        )
        now = utcnow()
        for row in rows:
            try:
                job = SendEmail.model_validate(
                    {
                        "to": row.to,
                        "template": row.template,
                        "locale": row.locale,
                        "variables": row.variables or {},
                        "email_queue_id": row.id,
                    }
                )
            except ValidationError as exc:
                row.status, row.last_error, row.updated_at = "failed", f"invalid row: {exc}"[:2000], now
                invalid.append(row.id)
                continue
            requests.append(
                JobRequest("send-email", job, idempotency_key=f"email-queue:{row.id}", trace_id=ctx.trace_id)
            )
            row.status, row.updated_at = "queued", now
            enqueued.append(row.id)
        duplicates = 0
        if requests:  # enqueue before commit: a failed commit re-picks rows the keys then dedupe
            results = await Producer(ctx.redis, settings).enqueue_many(EMAIL_QUEUE, requests)
            duplicates = sum(1 for r in results if r.duplicate)
    log.info(
        "email queue: %d enqueued (%d already were), %d invalid", len(enqueued), duplicates, len(invalid)
    )
    return {"enqueued": len(enqueued) - duplicates, "duplicates": duplicates, "invalid": invalid}


async def _claim_cooldown(ctx: JobContext, payload: SendOtp, cooldown_s: int) -> None:
    """One code per user and purpose per cool-down, across replicas: ``SET NX`` holding the job id
    (a retry of the same job passes)."""
    if cooldown_s <= 0:
        return
    key = f"{keys.prefix(OTP_QUEUE)}otp-cooldown:{payload.user_id}:{payload.purpose}"
    for _ in range(2):
        if await ctx.redis.set(key, ctx.job_id, nx=True, ex=cooldown_s):
            return
        holder = await ctx.redis.get(key)
        if holder is not None:
            if (holder.decode() if isinstance(holder, bytes) else holder) == ctx.job_id:
                return
            raise CoolDown(
                f"cool-down: a code for user {payload.user_id} ({payload.purpose}) was sent less than "
                f"{cooldown_s}s ago"
            )
    raise CoolDown(f"cool-down: could not claim the cool-down of user {payload.user_id}")


@default_handlers.register(OTP_QUEUE, "send-otp")
async def send_otp(ctx: JobContext, payload: SendOtp) -> dict[str, Any]:
    """A fresh code per attempt; only its hash is stored, earlier open codes are superseded. The
    code never reaches a log, an error, the job's result or the EmailLog."""
    settings = get_settings()
    messaging = get_messaging_settings()
    if payload.channel == "sms" and not messaging.sms_provider_url:
        raise DeliveryRejected("no SMS provider configured (TQ_SMS_PROVIDER_URL)")
    if payload.channel == "email":
        try:
            SendEmail(to=payload.destination, template="otp")
        except ValidationError:
            raise DeliveryRejected(f"not an email address: {payload.destination!r}") from None
    await _claim_cooldown(ctx, payload, messaging.otp_cooldown_s)

    code = new_code(messaging.otp_length)
    expires_at = utcnow() + timedelta(seconds=messaging.otp_ttl_s)
    variables = {"code": code, "purpose": payload.purpose, "ttl_minutes": math.ceil(messaging.otp_ttl_s / 60)}
    async with sessions(settings.database_url)() as session:
        async with session.begin():
            await session.execute(
                update(OtpLog)
                .where(
                    OtpLog.user_id == payload.user_id,
                    OtpLog.purpose == payload.purpose,
                    OtpLog.status.in_(("pending", "sent")),
                )
                .values(status="superseded")
            )
            row = OtpLog(
                user_id=payload.user_id,
                channel=payload.channel,
                destination=payload.destination,
                purpose=payload.purpose,
                code_hash=hash_code(code),
                expires_at=expires_at,
                attempts=0,
                max_attempts=messaging.otp_max_attempts,
                status="pending",
            )
            session.add(row)

        rendered: Rendered | None = None
        try:
            if payload.channel == "email":
                rendered = render_email("otp", payload.locale, variables)
                response = await send_smtp(messaging, payload.destination, rendered)
            else:
                message = render_sms("otp", payload.locale, variables)
                response = await send_sms(messaging, payload.destination, message, secret=code)
        except Exception as exc:
            async with session.begin():
                row.status = "failed"
                if payload.channel == "email":
                    session.add(
                        _email_log(
                            ctx,
                            to=payload.destination,
                            template="otp",
                            locale=rendered.locale if rendered else payload.locale,
                            status="failed" if isinstance(exc, NonRetryableError) else "deferred",
                            subject=rendered.subject if rendered else None,
                            error=str(exc),
                        )
                    )
            log.warning("otp %s for user %s by %s failed: %s", row.id, payload.user_id, payload.channel, exc)
            raise
        async with session.begin():
            row.status = "sent"
            if rendered is not None:
                session.add(
                    _email_log(
                        ctx,
                        to=payload.destination,
                        template="otp",
                        locale=rendered.locale,
                        status="sent",
                        subject=rendered.subject,
                        smtp_response=response,
                    )
                )
    log.info("otp %s for user %s sent by %s", row.id, payload.user_id, payload.channel)
    return {"otp_id": row.id, "channel": payload.channel, "expires_at": expires_at.isoformat()}
