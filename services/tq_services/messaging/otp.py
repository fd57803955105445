"""One-time codes: generation with ``secrets``, a salted SHA-256 hash (the code itself is never
stored nor logged), and verification with an attempt counter."""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from tq.models import utcnow

from tq_services.messaging.models import OtpLog


def new_code(length: int) -> str:
    return "".join(secrets.choice("0123456789") for _ in range(length))


def hash_code(code: str, salt: str | None = None) -> str:
    """``sha256$<salt>$<hex digest of salt + code>``, a fresh 16-byte salt per code."""
    salt = salt if salt is not None else secrets.token_hex(16)
    digest = hashlib.sha256(f"{salt}${code}".encode()).hexdigest()
    return f"sha256${salt}${digest}"


def check_code(code: str, stored: str) -> bool:
    try:
        scheme, salt, _ = stored.split("$", 2)
    except ValueError:
        return False
    return scheme == "sha256" and hmac.compare_digest(hash_code(code, salt), stored)


async def verify_otp(session: AsyncSession, user_id: int, purpose: str, code: str) -> bool:
    """Check ``code`` against the latest code sent to ``user_id`` for ``purpose``.

    Every call counts as an attempt and is committed here (a caller's rollback must not give an
    attempt back): a match marks the code ``verified`` (usable once), reaching ``max_attempts``
    marks it ``locked``, a code past its expiry becomes ``expired``.
    """
    row = (
        await session.execute(
            select(OtpLog)
            .where(OtpLog.user_id == user_id, OtpLog.purpose == purpose, OtpLog.status == "sent")
            .order_by(OtpLog.id.desc())
            .limit(1)
            .with_for_update()
        )
    ).scalar_one_or_none()
    if row is None:
        await session.commit()
        return False
    if row.expires_at <= utcnow():
        row.status = "expired"
    else:
        row.attempts += 1
        if check_code(code, row.code_hash):
            row.status = "verified"
        elif row.attempts >= row.max_attempts:
            row.status = "locked"
    verified = row.status == "verified"
    await session.commit()
    return verified
