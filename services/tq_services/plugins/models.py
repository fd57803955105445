"""Tables of the plugins family (tq_services.plugins)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column
from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow

PLUGIN_RUN_STATUSES = (
    "succeeded",
    "trapped",
    "timed_out",
    "out_of_fuel",
    "out_of_memory",
    "permission_denied",
    "invalid_output",
    "disabled",
)


class Plugin(Base):
    """A WebAssembly module with the host capabilities it may call (``permissions``, e.g.
    ``article.read``, ``event.emit``). ``sha256`` is the module's digest, checked at install."""

    __tablename__ = "plugin"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    version: Mapped[str] = mapped_column(String(200))
    module: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    exports: Mapped[list[str]] = mapped_column(JSONType, default=list)
    permissions: Mapped[list[str]] = mapped_column(JSONType, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    def __repr__(self) -> str:  # never the module bytes
        return (
            f"Plugin(id={self.id!r}, name={self.name!r}, version={self.version!r}, enabled={self.enabled!r})"
        )


class PluginExecutionLog(Base):
    """One run of a plugin: how it ended (``status`` names the reason a run was stopped), how long
    it took, the fuel it burnt, its output or the error and stack."""

    __tablename__ = "plugin_execution_log"
    __table_args__ = (CheckConstraint(one_of("status", PLUGIN_RUN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    plugin_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("plugin.id", ondelete="CASCADE"),
        index=True,
    )
    plugin_version: Mapped[str] = mapped_column(String(200))
    entrypoint: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(20))
    duration_ms: Mapped[float] = mapped_column(Float)
    fuel_consumed: Mapped[int | None] = mapped_column(BigInteger)
    output: Mapped[Any | None] = mapped_column(JSONType)
    error_stack: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(100), index=True)
    trace_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    def __repr__(self) -> str:
        return f"PluginExecutionLog(id={self.id!r}, plugin_id={self.plugin_id!r}, status={self.status!r})"
