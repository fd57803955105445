"""The durable history schema (SQLAlchemy 2 declarative). Alembic migrations in ``tq/migrations``
own the actual DDL: a change here needs a new revision there."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# BIGINT on PostgreSQL; SQLite only autoincrements an ``INTEGER PRIMARY KEY``.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware timestamp that reads back aware (UTC) on every back end.

    SQLite has no time zones: values are stored as UTC and given ``tzinfo=UTC`` when read.
    Naive datetimes written are taken to be UTC.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {dict[str, Any]: JSONType, datetime: UTCDateTime}


class AuditLog(Base):
    """One thing that happened: a job outcome (written by the AuditWriter) or an admin action."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    actor: Mapped[str] = mapped_column(String(200))
    action: Mapped[str] = mapped_column(String(100), index=True)
    target: Mapped[str] = mapped_column(String(300), index=True)
    outcome: Mapped[str] = mapped_column(String(50))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    trace_id: Mapped[str | None] = mapped_column(String(100), index=True)
    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), index=True, default=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return (
            f"AuditLog(id={self.id!r}, action={self.action!r}, target={self.target!r}, "
            f"outcome={self.outcome!r}, created_at={self.created_at!r})"
        )


class QueueMetricAggregate(Base):
    """One queue's 5-minute bucket, written once by the stats leader (``tq.stats``) when the bucket
    ends. The counts are deltas of the queue's monotonic counters over the bucket; durations come
    from the completed job records that finished in it; ``max_*`` are the highest depths the
    leader's 10-second snapshots saw in it."""

    __tablename__ = "queue_metric_aggregate"
    __table_args__ = (UniqueConstraint("queue", "bucket_start"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    queue: Mapped[str] = mapped_column(String(200))
    bucket_start: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    enqueued: Mapped[int] = mapped_column(BigInteger, default=0)
    completed: Mapped[int] = mapped_column(BigInteger, default=0)
    failed: Mapped[int] = mapped_column(BigInteger, default=0, doc="retried + dead")
    retried: Mapped[int] = mapped_column(BigInteger, default=0)
    dead: Mapped[int] = mapped_column(BigInteger, default=0)
    avg_duration_ms: Mapped[float | None] = mapped_column(Float)
    p95_duration_ms: Mapped[float | None] = mapped_column(Float)
    max_waiting: Mapped[int] = mapped_column(BigInteger, default=0)
    max_dlq: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return (
            f"QueueMetricAggregate(queue={self.queue!r}, bucket_start={self.bucket_start!r}, "
            f"completed={self.completed!r}, failed={self.failed!r})"
        )


# ---- messaging (tq_services.messaging) ------------------------------------------------------------
EMAIL_QUEUE_STATUSES = ("pending", "queued", "sending", "sent", "failed")
EMAIL_LOG_STATUSES = ("sent", "deferred", "failed")
OTP_STATUSES = ("pending", "sent", "failed", "verified", "superseded", "expired", "locked")


def _one_of(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class EmailQueue(Base):
    """An email waiting to be sent: ``process-email-queue`` turns ``pending`` rows into send-email
    jobs (``queued``); the job marks it ``sending``, then ``sent`` or ``failed``."""

    __tablename__ = "email_queue"
    __table_args__ = (
        CheckConstraint(_one_of("status", EMAIL_QUEUE_STATUSES), name="status"),
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
    __table_args__ = (CheckConstraint(_one_of("status", EMAIL_LOG_STATUSES), name="status"),)

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
        CheckConstraint(_one_of("status", OTP_STATUSES), name="status"),
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


# ---- webhooks (tq_services.webhooks) --------------------------------------------------------------
WEBHOOK_OUTCOMES = ("delivered", "retrying", "failed")


class WebhookEndpoint(Base):
    """A receiver of signed webhook deliveries. ``events`` lists the event names it subscribes to
    (empty: all of them, for a producer fanning out); a 410 answer sets ``active`` false."""

    __tablename__ = "webhook_endpoint"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(500))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    events: Mapped[list[str]] = mapped_column(JSONType, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:  # never the secret
        return f"WebhookEndpoint(id={self.id!r}, url={self.url!r}, active={self.active!r})"


class WebhookDeliveryLog(Base):
    """One delivery attempt of one webhook: the receiver's status code, how long it took, the
    start of its answer (``webhook_max_response_bytes``), the error, and the job that did it."""

    __tablename__ = "webhook_delivery_log"
    __table_args__ = (
        CheckConstraint(_one_of("outcome", WEBHOOK_OUTCOMES), name="outcome"),
        Index("ix_webhook_delivery_log_endpoint_id_created_at", "endpoint_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    endpoint_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("webhook_endpoint.id", ondelete="CASCADE"),
    )
    delivery_id: Mapped[str] = mapped_column(String(200), index=True)
    event: Mapped[str] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(String(20))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_ms: Mapped[float | None] = mapped_column(Float)
    response_body: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(100), index=True)
    trace_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return (
            f"WebhookDeliveryLog(id={self.id!r}, endpoint_id={self.endpoint_id!r}, "
            f"delivery_id={self.delivery_id!r}, attempt={self.attempt!r}, status_code={self.status_code!r})"
        )
