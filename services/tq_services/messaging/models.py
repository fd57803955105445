"""Tables of the messaging family (tq_services.messaging)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column
from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow

EMAIL_QUEUE_STATUSES = ("pending", "queued", "sending", "sent", "failed")
EMAIL_LOG_STATUSES = ("sent", "deferred", "failed")
OTP_STATUSES = ("pending", "sent", "failed", "verified", "superseded", "expired", "locked")


class EmailQueue(Base):
    """An email waiting to be sent: ``process-email-queue`` turns ``pending`` rows into send-email
    jobs (``queued``); the job marks it ``sending``, then ``sent`` or ``failed``."""

    __tablename__ = "email_queue"
    __table_args__ = (
        CheckConstraint(one_of("status", EMAIL_QUEUE_STATUSES), name="status"),
        Index("ix_email_queue_status_id", "status", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    to: Mapped[str] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(20), default="en")
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return (
            f"EmailQueue(id={self.id!r}, to={self.to!r}, template={self.template!r}, status={self.status!r})"
        )


class EmailLog(Base):
    """One delivery attempt of one email (send-email or an OTP by email): what was sent, the SMTP
    server's answer, the error, and the job that did it. Bodies are not kept."""

    __tablename__ = "email_log"
    __table_args__ = (CheckConstraint(one_of("status", EMAIL_LOG_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    email_queue_id: Mapped[int | None] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("email_queue.id", ondelete="SET NULL"),
        index=True,
    )
    to: Mapped[str] = mapped_column(String(320))
    template: Mapped[str] = mapped_column(String(200))
    locale: Mapped[str] = mapped_column(String(20))
    subject: Mapped[str | None] = mapped_column(String(998))
    status: Mapped[str] = mapped_column(String(20))
    smtp_response: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(100), index=True)
    trace_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), index=True, default=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return f"EmailLog(id={self.id!r}, to={self.to!r}, template={self.template!r}, status={self.status!r})"


class OtpLog(Base):
    """One one-time code: only its salted hash (``sha256$<salt>$<digest>``) is stored, with its
    expiry and the verification attempts left."""

    __tablename__ = "otp_log"
    __table_args__ = (
        CheckConstraint(one_of("status", OTP_STATUSES), name="status"),
        CheckConstraint("channel IN ('email', 'sms')", name="channel"),
        Index("ix_otp_log_user_id_purpose_created_at", "user_id", "purpose", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    channel: Mapped[str] = mapped_column(String(10))
    destination: Mapped[str] = mapped_column(String(320))
    purpose: Mapped[str] = mapped_column(String(200))
    code_hash: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:  # never the hash
        return (
            f"OtpLog(id={self.id!r}, user_id={self.user_id!r}, purpose={self.purpose!r}, "
            f"channel={self.channel!r}, status={self.status!r})"
        )
