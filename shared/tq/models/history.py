"""The engine's own history: job outcomes and admin actions (AuditLog), 5-minute queue aggregates."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    String,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column

from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, utcnow


class AuditLog(Base):
    """One thing that happened: a job outcome (written by the AuditWriter) or an admin action.

    ``event_key`` names a job outcome once (``queue/job-id#attempt:outcome``, see
    ``tq.audit.event_key``); its unique index makes the writer's at-least-once delivery write
    each outcome exactly once (a redelivered entry's insert is skipped). Admin actions leave it
    NULL: each is its own row.
    """

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
    event_key: Mapped[str | None] = mapped_column(String(400), index=True, unique=True)

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
