"""Tables of the workflows family (tq_services.workflows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column
from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow

WORKFLOW_INSTANCE_STATUSES = ("pending", "running", "completed", "failed")
WORKFLOW_STEP_STATUSES = ("running", "completed", "failed", "skipped")

_FK = BigInteger().with_variant(Integer(), "sqlite")


class WorkflowDefinition(Base):
    """Ordered ``steps`` (each a dict with ``type``, its config and its own ``retry`` policy; see
    ``tq_services.workflows.steps``). ``trigger`` names the event that starts it (trigger-workflow)."""

    __tablename__ = "workflow_definition"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    trigger: Mapped[str | None] = mapped_column(String(200), index=True)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:
        return f"WorkflowDefinition(id={self.id!r}, name={self.name!r}, trigger={self.trigger!r})"


class WorkflowInstance(Base):
    """One run of a definition: pending -> running -> completed | failed. ``current_step`` is the
    first unfinished step (a resumed run starts there); ``outputs`` holds each finished step's output.
    ``job_id`` is the run-workflow job that owns it (a reclaimed or replayed job finds it again)."""

    __tablename__ = "workflow_instance"
    __table_args__ = (CheckConstraint(one_of("status", WORKFLOW_INSTANCE_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    workflow_id: Mapped[int] = mapped_column(_FK, ForeignKey("workflow_definition.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(20), default="pending")
    input: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    outputs: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    current_step: Mapped[int] = mapped_column(Integer, default=0)
    step_attempts: Mapped[int] = mapped_column(Integer, default=0, doc="failed attempts of current_step")
    resume_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), doc="earliest next attempt (backoff)")
    wakeups: Mapped[int] = mapped_column(Integer, default=0, doc="continuation jobs scheduled so far")
    job_id: Mapped[str | None] = mapped_column(String(100), unique=True)
    trigger: Mapped[str | None] = mapped_column(String(200))
    failed_step: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return (
            f"WorkflowInstance(id={self.id!r}, workflow_id={self.workflow_id!r}, status={self.status!r}, "
            f"current_step={self.current_step!r})"
        )


class WorkflowStepExecution(Base):
    """One attempt of one step. ``attempt`` counts every attempt of the step in this instance; an
    enqueue step records its child job, a delay step when it is due."""

    __tablename__ = "workflow_step_execution"
    __table_args__ = (
        CheckConstraint(one_of("status", WORKFLOW_STEP_STATUSES), name="status"),
        UniqueConstraint("instance_id", "step_index", "attempt"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    instance_id: Mapped[int] = mapped_column(_FK, ForeignKey("workflow_instance.id", ondelete="CASCADE"))
    step_index: Mapped[int] = mapped_column(Integer)
    step_name: Mapped[str] = mapped_column(String(200))
    step_type: Mapped[str] = mapped_column(String(20))
    attempt: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default="running")
    output: Mapped[Any | None] = mapped_column(JSONType)
    error_message: Mapped[str | None] = mapped_column(Text)
    child_queue: Mapped[str | None] = mapped_column(String(100))
    child_job_id: Mapped[str | None] = mapped_column(String(100))
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    job_id: Mapped[str | None] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime())

    def __repr__(self) -> str:
        return (
            f"WorkflowStepExecution(instance_id={self.instance_id!r}, step_index={self.step_index!r}, "
            f"attempt={self.attempt!r}, status={self.status!r})"
        )
