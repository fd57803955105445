"""Tables of the media family (tq_services.media): uploaded files and their optimized variants."""

from __future__ import annotations

from datetime import datetime
from enum import Enum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from tq.models.base import Base, BigIntPK, UTCDateTime, one_of, utcnow


class FileStatus(str, Enum):
    UPLOADED = "uploaded"  # the original is stored, no variants yet
    OPTIMIZED = "optimized"  # variants written and listed in file_variant
    FAILED = "failed"  # the original cannot be processed (see ``error``)


FILE_STATUSES = tuple(s.value for s in FileStatus)


class File(Base):
    """An uploaded file. ``path`` is the original's key in the media store; the image fields are
    filled by optimize-image (orientation applied: width and height as displayed)."""

    __tablename__ = "file"
    __table_args__ = (CheckConstraint(one_of("status", FILE_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(String(1000))
    content_type: Mapped[str | None] = mapped_column(String(200))
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    format: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[str] = mapped_column(String(20), default=FileStatus.UPLOADED.value)
    error: Mapped[str | None] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(100), doc="the optimize-image job that last ran")
    optimized_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, server_default=func.now()
    )

    variants: Mapped[list[FileVariant]] = relationship(
        back_populates="file", cascade="all, delete-orphan", passive_deletes=True, order_by="FileVariant.id"
    )

    def __repr__(self) -> str:
        return f"File(id={self.id!r}, path={self.path!r}, status={self.status!r})"


class FileVariant(Base):
    """One resized, re-encoded copy of a file: its key in the media store, size and format."""

    __tablename__ = "file_variant"
    __table_args__ = (UniqueConstraint("file_id", "width", "format"),)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    file_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), ForeignKey("file.id", ondelete="CASCADE"), index=True
    )
    path: Mapped[str] = mapped_column(String(1000))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(BigInteger)
    format: Mapped[str] = mapped_column(String(20))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, server_default=func.now())

    file: Mapped[File] = relationship(back_populates="variants")

    def __repr__(self) -> str:
        return f"FileVariant(file_id={self.file_id!r}, width={self.width!r}, format={self.format!r})"
