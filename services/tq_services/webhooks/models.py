"""Tables of the webhooks family (tq_services.webhooks)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column
from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow

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
        CheckConstraint(one_of("outcome", WEBHOOK_OUTCOMES), name="outcome"),
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
