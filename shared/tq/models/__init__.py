"""The durable schema (SQLAlchemy 2 declarative), one module per area, all on one ``Base``.

Alembic migrations in ``tq/migrations`` own the actual DDL: a change here needs a new revision
there. Every module is imported here so ``Base.metadata`` knows every table.
"""

from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow
from tq.models.content import ARTICLE_STATUSES, REVIEW_STATUSES, Article, ArticleVersion, Translation
from tq.models.history import AuditLog, QueueMetricAggregate
from tq.models.messaging import (
    EMAIL_LOG_STATUSES,
    EMAIL_QUEUE_STATUSES,
    OTP_STATUSES,
    EmailLog,
    EmailQueue,
    OtpLog,
)
from tq.models.webhooks import WEBHOOK_OUTCOMES, WebhookDeliveryLog, WebhookEndpoint

__all__ = [
    "ARTICLE_STATUSES",
    "EMAIL_LOG_STATUSES",
    "EMAIL_QUEUE_STATUSES",
    "OTP_STATUSES",
    "REVIEW_STATUSES",
    "WEBHOOK_OUTCOMES",
    "Article",
    "ArticleVersion",
    "AuditLog",
    "Base",
    "BigIntPK",
    "EmailLog",
    "EmailQueue",
    "JSONType",
    "OtpLog",
    "QueueMetricAggregate",
    "Translation",
    "UTCDateTime",
    "WebhookDeliveryLog",
    "WebhookEndpoint",
    "one_of",
    "utcnow",
]
