"""The durable schema (SQLAlchemy 2 declarative), one module per area, all on one ``Base``.

Alembic migrations in ``tq/migrations`` own the actual DDL: a change here needs a new revision
there. Every module is imported here so ``Base.metadata`` knows every table.
"""

from tq.models.ai import (
    AI_DRAFT_KINDS,
    AI_DRAFT_STATUSES,
    AI_MESSAGE_ROLES,
    AI_REPORT_KINDS,
    AI_RUN_STATUSES,
    AiDraft,
    AiEventLog,
    AiMessage,
    AIReport,
    AiRun,
    ArticleQualityReport,
)
from tq.models.analytics import (
    AggregateBucket,
    AnalyticsAggregate,
    AnalyticsEvent,
    AnalyticsEventType,
    AnalyticsWatermark,
    ArticleStatsDaily,
    SearchQueryStatsDaily,
    UserEngagementDaily,
)
from tq.models.base import Base, BigIntPK, JSONType, UTCDateTime, one_of, utcnow
from tq.models.content import ARTICLE_STATUSES, REVIEW_STATUSES, Article, ArticleVersion, Translation
from tq.models.history import AuditLog, QueueMetricAggregate
from tq.models.media import FILE_STATUSES, File, FileStatus, FileVariant
from tq.models.messaging import (
    EMAIL_LOG_STATUSES,
    EMAIL_QUEUE_STATUSES,
    OTP_STATUSES,
    EmailLog,
    EmailQueue,
    OtpLog,
)
from tq.models.plugins import PLUGIN_RUN_STATUSES, Plugin, PluginExecutionLog
from tq.models.search import SEARCH_SOURCES, SearchDocument, SearchSource
from tq.models.webhooks import WEBHOOK_OUTCOMES, WebhookDeliveryLog, WebhookEndpoint
from tq.models.workflows import (
    WORKFLOW_INSTANCE_STATUSES,
    WORKFLOW_STEP_STATUSES,
    WorkflowDefinition,
    WorkflowInstance,
    WorkflowStepExecution,
)

__all__ = [
    "AI_DRAFT_KINDS",
    "AI_DRAFT_STATUSES",
    "AI_MESSAGE_ROLES",
    "AI_REPORT_KINDS",
    "AI_RUN_STATUSES",
    "ARTICLE_STATUSES",
    "EMAIL_LOG_STATUSES",
    "EMAIL_QUEUE_STATUSES",
    "FILE_STATUSES",
    "OTP_STATUSES",
    "PLUGIN_RUN_STATUSES",
    "REVIEW_STATUSES",
    "SEARCH_SOURCES",
    "WEBHOOK_OUTCOMES",
    "WORKFLOW_INSTANCE_STATUSES",
    "WORKFLOW_STEP_STATUSES",
    "AIReport",
    "AggregateBucket",
    "AiDraft",
    "AiEventLog",
    "AiMessage",
    "AiRun",
    "AnalyticsAggregate",
    "AnalyticsEvent",
    "AnalyticsEventType",
    "AnalyticsWatermark",
    "Article",
    "ArticleQualityReport",
    "ArticleStatsDaily",
    "ArticleVersion",
    "AuditLog",
    "Base",
    "BigIntPK",
    "EmailLog",
    "EmailQueue",
    "File",
    "FileStatus",
    "FileVariant",
    "JSONType",
    "OtpLog",
    "Plugin",
    "PluginExecutionLog",
    "QueueMetricAggregate",
    "SearchDocument",
    "SearchQueryStatsDaily",
    "SearchSource",
    "Translation",
    "UTCDateTime",
    "UserEngagementDaily",
    "WebhookDeliveryLog",
    "WebhookEndpoint",
    "WorkflowDefinition",
    "WorkflowInstance",
    "WorkflowStepExecution",
    "one_of",
    "utcnow",
]
