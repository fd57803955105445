"""The engine's durable schema (SQLAlchemy 2 declarative): the ``Base`` every table shares, its
portable column types, and the engine's own tables (``AuditLog``, ``QueueMetricAggregate``).

The families' tables live with their families (``tq_services.<family>.models``) on this same
``Base``, so one ``Base.metadata`` holds them all once they are imported. The engine's Alembic
migrations in ``tq/migrations`` own the DDL of its tables: a change here needs a new revision there.
"""

from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow
from tq.models.history import AuditLog, QueueMetricAggregate

__all__ = [
    "AuditLog",
    "Base",
    "BigIntPK",
    "JSONType",
    "QueueMetricAggregate",
    "UTCDateTime",
    "one_of",
    "utcnow",
]
