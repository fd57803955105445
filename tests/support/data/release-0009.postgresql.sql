BEGIN;

CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL,
    CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE audit_log (
    id BIGSERIAL NOT NULL,
    actor VARCHAR(200) NOT NULL,
    action VARCHAR(100) NOT NULL,
    target VARCHAR(300) NOT NULL,
    outcome VARCHAR(50) NOT NULL,
    details JSONB NOT NULL,
    trace_id VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_audit_log PRIMARY KEY (id)
);

CREATE INDEX ix_audit_log_action ON audit_log (action);

CREATE INDEX ix_audit_log_target ON audit_log (target);

CREATE INDEX ix_audit_log_trace_id ON audit_log (trace_id);

CREATE INDEX ix_audit_log_created_at ON audit_log (created_at);

INSERT INTO alembic_version (version_num) VALUES ('0001') RETURNING alembic_version.version_num;

-- Running upgrade 0001 -> 0002

CREATE TABLE queue_metric_aggregate (
    id BIGSERIAL NOT NULL,
    queue VARCHAR(200) NOT NULL,
    bucket_start TIMESTAMP WITH TIME ZONE NOT NULL,
    enqueued BIGINT NOT NULL,
    completed BIGINT NOT NULL,
    failed BIGINT NOT NULL,
    retried BIGINT NOT NULL,
    dead BIGINT NOT NULL,
    avg_duration_ms FLOAT,
    p95_duration_ms FLOAT,
    max_waiting BIGINT NOT NULL,
    max_dlq BIGINT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_queue_metric_aggregate PRIMARY KEY (id),
    CONSTRAINT uq_queue_metric_aggregate_queue_bucket_start UNIQUE (queue, bucket_start)
);

CREATE INDEX ix_queue_metric_aggregate_bucket_start ON queue_metric_aggregate (bucket_start);

UPDATE alembic_version SET version_num='0002' WHERE alembic_version.version_num = '0001';

-- Running upgrade 0002 -> 0003

CREATE TABLE email_queue (
    id BIGSERIAL NOT NULL,
    "to" VARCHAR(320) NOT NULL,
    template VARCHAR(200) NOT NULL,
    locale VARCHAR(20) NOT NULL,
    variables JSONB NOT NULL,
    status VARCHAR(20) NOT NULL,
    attempts INTEGER NOT NULL,
    last_error TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_email_queue PRIMARY KEY (id),
    CONSTRAINT ck_email_queue_status CHECK (status IN ('pending', 'queued', 'sending', 'sent', 'failed'))
);

CREATE INDEX ix_email_queue_status_id ON email_queue (status, id);

CREATE TABLE email_log (
    id BIGSERIAL NOT NULL,
    email_queue_id BIGINT,
    "to" VARCHAR(320) NOT NULL,
    template VARCHAR(200) NOT NULL,
    locale VARCHAR(20) NOT NULL,
    subject VARCHAR(998),
    status VARCHAR(20) NOT NULL,
    smtp_response TEXT,
    error TEXT,
    job_id VARCHAR(100),
    trace_id VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_email_log PRIMARY KEY (id),
    CONSTRAINT ck_email_log_status CHECK (status IN ('sent', 'deferred', 'failed')),
    CONSTRAINT fk_email_log_email_queue_id_email_queue FOREIGN KEY(email_queue_id) REFERENCES email_queue (id) ON DELETE SET NULL
);

CREATE INDEX ix_email_log_email_queue_id ON email_log (email_queue_id);

CREATE INDEX ix_email_log_job_id ON email_log (job_id);

CREATE INDEX ix_email_log_created_at ON email_log (created_at);

CREATE TABLE otp_log (
    id BIGSERIAL NOT NULL,
    user_id BIGINT NOT NULL,
    channel VARCHAR(10) NOT NULL,
    destination VARCHAR(320) NOT NULL,
    purpose VARCHAR(200) NOT NULL,
    code_hash VARCHAR(200) NOT NULL,
    expires_at TIMESTAMP WITH TIME ZONE NOT NULL,
    attempts INTEGER NOT NULL,
    max_attempts INTEGER NOT NULL,
    status VARCHAR(20) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_otp_log PRIMARY KEY (id),
    CONSTRAINT ck_otp_log_status CHECK (status IN ('pending', 'sent', 'failed', 'verified', 'superseded', 'expired', 'locked')),
    CONSTRAINT ck_otp_log_channel CHECK (channel IN ('email', 'sms'))
);

CREATE INDEX ix_otp_log_user_id_purpose_created_at ON otp_log (user_id, purpose, created_at);

UPDATE alembic_version SET version_num='0003' WHERE alembic_version.version_num = '0002';

-- Running upgrade 0003 -> 0004

CREATE TABLE webhook_endpoint (
    id BIGSERIAL NOT NULL,
    url VARCHAR(2000) NOT NULL,
    secret VARCHAR(500) NOT NULL,
    active BOOLEAN NOT NULL,
    events JSONB NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_webhook_endpoint PRIMARY KEY (id)
);

CREATE TABLE webhook_delivery_log (
    id BIGSERIAL NOT NULL,
    endpoint_id BIGINT NOT NULL,
    delivery_id VARCHAR(200) NOT NULL,
    event VARCHAR(200) NOT NULL,
    attempt INTEGER NOT NULL,
    outcome VARCHAR(20) NOT NULL,
    status_code INTEGER,
    response_ms FLOAT,
    response_body TEXT,
    error TEXT,
    job_id VARCHAR(100),
    trace_id VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_webhook_delivery_log PRIMARY KEY (id),
    CONSTRAINT ck_webhook_delivery_log_outcome CHECK (outcome IN ('delivered', 'retrying', 'failed')),
    CONSTRAINT fk_webhook_delivery_log_endpoint_id_webhook_endpoint FOREIGN KEY(endpoint_id) REFERENCES webhook_endpoint (id) ON DELETE CASCADE
);

CREATE INDEX ix_webhook_delivery_log_delivery_id ON webhook_delivery_log (delivery_id);

CREATE INDEX ix_webhook_delivery_log_job_id ON webhook_delivery_log (job_id);

CREATE INDEX ix_webhook_delivery_log_endpoint_id_created_at ON webhook_delivery_log (endpoint_id, created_at);

UPDATE alembic_version SET version_num='0004' WHERE alembic_version.version_num = '0003';

-- Running upgrade 0004 -> 0005

CREATE TABLE article (
    id BIGSERIAL NOT NULL,
    title VARCHAR(500) NOT NULL,
    body TEXT NOT NULL,
    locale VARCHAR(20) NOT NULL,
    status VARCHAR(20) NOT NULL,
    tags JSONB NOT NULL,
    meta_title VARCHAR(300),
    meta_description VARCHAR(1000),
    main_keyword VARCHAR(200),
    keywords JSONB NOT NULL,
    seo_score FLOAT,
    readability FLOAT,
    review_status VARCHAR(20) NOT NULL,
    ai_score FLOAT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_article PRIMARY KEY (id),
    CONSTRAINT ck_article_review_status CHECK (review_status IN ('pending', 'approved', 'needs_changes', 'rejected')),
    CONSTRAINT ck_article_status CHECK (status IN ('draft', 'review', 'published', 'archived'))
);

CREATE TABLE article_version (
    id BIGSERIAL NOT NULL,
    article_id BIGINT NOT NULL,
    version INTEGER NOT NULL,
    title VARCHAR(500) NOT NULL,
    body TEXT NOT NULL,
    source VARCHAR(100) NOT NULL,
    job_id VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_article_version PRIMARY KEY (id),
    CONSTRAINT fk_article_version_article_id_article FOREIGN KEY(article_id) REFERENCES article (id) ON DELETE CASCADE,
    CONSTRAINT uq_article_version_article_id_version UNIQUE (article_id, version)
);

CREATE TABLE translation (
    id BIGSERIAL NOT NULL,
    article_id BIGINT NOT NULL,
    locale VARCHAR(20) NOT NULL,
    title VARCHAR(500) NOT NULL,
    body TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_translation PRIMARY KEY (id),
    CONSTRAINT fk_translation_article_id_article FOREIGN KEY(article_id) REFERENCES article (id) ON DELETE CASCADE,
    CONSTRAINT uq_translation_article_id_locale UNIQUE (article_id, locale)
);

UPDATE alembic_version SET version_num='0005' WHERE alembic_version.version_num = '0004';

-- Running upgrade 0005 -> 0006

CREATE TABLE ai_run (
    id BIGSERIAL NOT NULL,
    job_id VARCHAR(100) NOT NULL,
    queue VARCHAR(100) NOT NULL,
    job_name VARCHAR(100) NOT NULL,
    attempt INTEGER NOT NULL,
    article_id BIGINT,
    model VARCHAR(200) NOT NULL,
    status VARCHAR(20) NOT NULL,
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost FLOAT,
    duration_ms FLOAT,
    error TEXT,
    trace_id VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    finished_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT pk_ai_run PRIMARY KEY (id),
    CONSTRAINT ck_ai_run_status CHECK (status IN ('running', 'succeeded', 'retrying', 'failed')),
    CONSTRAINT fk_ai_run_article_id_article FOREIGN KEY(article_id) REFERENCES article (id) ON DELETE SET NULL
);

CREATE INDEX ix_ai_run_job_id ON ai_run (job_id);

CREATE INDEX ix_ai_run_article_id_created_at ON ai_run (article_id, created_at);

CREATE TABLE ai_message (
    id BIGSERIAL NOT NULL,
    run_id BIGINT NOT NULL,
    role VARCHAR(20) NOT NULL,
    content TEXT NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_ai_message PRIMARY KEY (id),
    CONSTRAINT ck_ai_message_role CHECK (role IN ('system', 'user', 'assistant')),
    CONSTRAINT fk_ai_message_run_id_ai_run FOREIGN KEY(run_id) REFERENCES ai_run (id) ON DELETE CASCADE
);

CREATE INDEX ix_ai_message_run_id ON ai_message (run_id);

CREATE TABLE ai_event_log (
    id BIGSERIAL NOT NULL,
    run_id BIGINT NOT NULL,
    job_id VARCHAR(100) NOT NULL,
    event VARCHAR(40) NOT NULL,
    model VARCHAR(200),
    tokens_in INTEGER,
    tokens_out INTEGER,
    cost FLOAT,
    duration_ms FLOAT,
    message TEXT,
    detail TEXT,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_ai_event_log PRIMARY KEY (id),
    CONSTRAINT fk_ai_event_log_run_id_ai_run FOREIGN KEY(run_id) REFERENCES ai_run (id) ON DELETE CASCADE
);

CREATE INDEX ix_ai_event_log_run_id ON ai_event_log (run_id);

CREATE INDEX ix_ai_event_log_job_id ON ai_event_log (job_id);

CREATE TABLE ai_draft (
    id BIGSERIAL NOT NULL,
    article_id BIGINT NOT NULL,
    run_id BIGINT,
    kind VARCHAR(20) NOT NULL,
    locale VARCHAR(20) NOT NULL,
    title VARCHAR(500),
    content TEXT NOT NULL,
    source_text TEXT,
    status VARCHAR(20) NOT NULL,
    job_id VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_ai_draft PRIMARY KEY (id),
    CONSTRAINT ck_ai_draft_kind CHECK (kind IN ('draft', 'summary', 'translation', 'rewrite')),
    CONSTRAINT ck_ai_draft_status CHECK (status IN ('pending', 'accepted', 'discarded')),
    CONSTRAINT fk_ai_draft_article_id_article FOREIGN KEY(article_id) REFERENCES article (id) ON DELETE CASCADE,
    CONSTRAINT fk_ai_draft_run_id_ai_run FOREIGN KEY(run_id) REFERENCES ai_run (id) ON DELETE SET NULL
);

CREATE INDEX ix_ai_draft_article_id_kind ON ai_draft (article_id, kind);

CREATE TABLE ai_report (
    id BIGSERIAL NOT NULL,
    article_id BIGINT NOT NULL,
    run_id BIGINT,
    kind VARCHAR(20) NOT NULL,
    originality_score FLOAT,
    seo_score FLOAT,
    structure_valid BOOLEAN,
    ai_probability FLOAT,
    data JSONB NOT NULL,
    job_id VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_ai_report PRIMARY KEY (id),
    CONSTRAINT ck_ai_report_kind CHECK (kind IN ('seo', 'meta', 'keywords', 'review')),
    CONSTRAINT fk_ai_report_article_id_article FOREIGN KEY(article_id) REFERENCES article (id) ON DELETE CASCADE,
    CONSTRAINT fk_ai_report_run_id_ai_run FOREIGN KEY(run_id) REFERENCES ai_run (id) ON DELETE SET NULL
);

CREATE INDEX ix_ai_report_article_id_created_at ON ai_report (article_id, created_at);

CREATE TABLE article_quality_report (
    id BIGSERIAL NOT NULL,
    article_id BIGINT NOT NULL,
    run_id BIGINT,
    word_count INTEGER NOT NULL,
    sentence_count INTEGER NOT NULL,
    avg_sentence_words FLOAT NOT NULL,
    long_sentence_ratio FLOAT NOT NULL,
    heading_count INTEGER NOT NULL,
    structure_valid BOOLEAN NOT NULL,
    keyword VARCHAR(200),
    keyword_density FLOAT,
    readability FLOAT NOT NULL,
    score FLOAT,
    issues JSONB NOT NULL,
    job_id VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_article_quality_report PRIMARY KEY (id),
    CONSTRAINT fk_article_quality_report_article_id_article FOREIGN KEY(article_id) REFERENCES article (id) ON DELETE CASCADE,
    CONSTRAINT fk_article_quality_report_run_id_ai_run FOREIGN KEY(run_id) REFERENCES ai_run (id) ON DELETE SET NULL
);

CREATE INDEX ix_article_quality_report_article_id_created_at ON article_quality_report (article_id, created_at);

UPDATE alembic_version SET version_num='0006' WHERE alembic_version.version_num = '0005';

-- Running upgrade 0006 -> 0007

CREATE TABLE workflow_definition (
    id BIGSERIAL NOT NULL,
    name VARCHAR(200) NOT NULL,
    description TEXT NOT NULL,
    trigger VARCHAR(200),
    steps JSONB NOT NULL,
    enabled BOOLEAN NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_workflow_definition PRIMARY KEY (id),
    CONSTRAINT uq_workflow_definition_name UNIQUE (name)
);

CREATE INDEX ix_workflow_definition_trigger ON workflow_definition (trigger);

CREATE TABLE workflow_instance (
    id BIGSERIAL NOT NULL,
    workflow_id BIGINT NOT NULL,
    status VARCHAR(20) NOT NULL,
    input JSONB NOT NULL,
    outputs JSONB NOT NULL,
    current_step INTEGER NOT NULL,
    step_attempts INTEGER NOT NULL,
    resume_at TIMESTAMP WITH TIME ZONE,
    wakeups INTEGER NOT NULL,
    job_id VARCHAR(100),
    trigger VARCHAR(200),
    failed_step INTEGER,
    error TEXT,
    started_at TIMESTAMP WITH TIME ZONE,
    finished_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_workflow_instance PRIMARY KEY (id),
    CONSTRAINT ck_workflow_instance_status CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    CONSTRAINT fk_workflow_instance_workflow_id_workflow_definition FOREIGN KEY(workflow_id) REFERENCES workflow_definition (id) ON DELETE CASCADE,
    CONSTRAINT uq_workflow_instance_job_id UNIQUE (job_id)
);

CREATE TABLE workflow_step_execution (
    id BIGSERIAL NOT NULL,
    instance_id BIGINT NOT NULL,
    step_index INTEGER NOT NULL,
    step_name VARCHAR(200) NOT NULL,
    step_type VARCHAR(20) NOT NULL,
    attempt INTEGER NOT NULL,
    status VARCHAR(20) NOT NULL,
    output JSONB,
    error_message TEXT,
    child_queue VARCHAR(100),
    child_job_id VARCHAR(100),
    due_at TIMESTAMP WITH TIME ZONE,
    job_id VARCHAR(100),
    started_at TIMESTAMP WITH TIME ZONE NOT NULL,
    finished_at TIMESTAMP WITH TIME ZONE,
    CONSTRAINT pk_workflow_step_execution PRIMARY KEY (id),
    CONSTRAINT ck_workflow_step_execution_status CHECK (status IN ('running', 'completed', 'failed', 'skipped')),
    CONSTRAINT fk_workflow_step_execution_instance_id_workflow_instance FOREIGN KEY(instance_id) REFERENCES workflow_instance (id) ON DELETE CASCADE,
    CONSTRAINT uq_workflow_step_execution_instance_id_step_index_attempt UNIQUE (instance_id, step_index, attempt)
);

CREATE TABLE plugin (
    id BIGSERIAL NOT NULL,
    name VARCHAR(200) NOT NULL,
    version VARCHAR(200) NOT NULL,
    module BYTEA NOT NULL,
    sha256 VARCHAR(64) NOT NULL,
    size_bytes INTEGER NOT NULL,
    exports JSONB NOT NULL,
    permissions JSONB NOT NULL,
    enabled BOOLEAN NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_plugin PRIMARY KEY (id),
    CONSTRAINT uq_plugin_name UNIQUE (name)
);

CREATE TABLE plugin_execution_log (
    id BIGSERIAL NOT NULL,
    plugin_id BIGINT NOT NULL,
    plugin_version VARCHAR(200) NOT NULL,
    entrypoint VARCHAR(200) NOT NULL,
    status VARCHAR(20) NOT NULL,
    duration_ms FLOAT NOT NULL,
    fuel_consumed BIGINT,
    output JSONB,
    error_stack TEXT,
    job_id VARCHAR(100),
    trace_id VARCHAR(100),
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_plugin_execution_log PRIMARY KEY (id),
    CONSTRAINT ck_plugin_execution_log_status CHECK (status IN ('succeeded', 'trapped', 'timed_out', 'out_of_fuel', 'out_of_memory', 'permission_denied', 'invalid_output', 'disabled')),
    CONSTRAINT fk_plugin_execution_log_plugin_id_plugin FOREIGN KEY(plugin_id) REFERENCES plugin (id) ON DELETE CASCADE
);

CREATE INDEX ix_plugin_execution_log_plugin_id ON plugin_execution_log (plugin_id);

CREATE INDEX ix_plugin_execution_log_job_id ON plugin_execution_log (job_id);

UPDATE alembic_version SET version_num='0007' WHERE alembic_version.version_num = '0006';

-- Running upgrade 0007 -> 0008

CREATE TABLE analytics_event (
    id BIGSERIAL NOT NULL,
    event_type VARCHAR(50) NOT NULL,
    article_id BIGINT,
    user_id BIGINT,
    session_id VARCHAR(100),
    query VARCHAR(500),
    occurred_at TIMESTAMP WITH TIME ZONE NOT NULL,
    meta JSONB,
    CONSTRAINT pk_analytics_event PRIMARY KEY (id)
);

CREATE INDEX ix_analytics_event_occurred_at ON analytics_event (occurred_at);

CREATE TABLE article_stats_daily (
    id BIGSERIAL NOT NULL,
    day DATE NOT NULL,
    article_id BIGINT NOT NULL,
    views BIGINT NOT NULL,
    reads BIGINT NOT NULL,
    clicks BIGINT NOT NULL,
    shares BIGINT NOT NULL,
    events BIGINT NOT NULL,
    unique_users BIGINT NOT NULL,
    unique_sessions BIGINT NOT NULL,
    computed_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_article_stats_daily PRIMARY KEY (id),
    CONSTRAINT uq_article_stats_daily_day_article_id UNIQUE (day, article_id)
);

CREATE TABLE search_query_stats_daily (
    id BIGSERIAL NOT NULL,
    day DATE NOT NULL,
    query VARCHAR(500) NOT NULL,
    searches BIGINT NOT NULL,
    clicks BIGINT NOT NULL,
    unique_users BIGINT NOT NULL,
    unique_sessions BIGINT NOT NULL,
    computed_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_search_query_stats_daily PRIMARY KEY (id),
    CONSTRAINT uq_search_query_stats_daily_day_query UNIQUE (day, query)
);

CREATE TABLE user_engagement_daily (
    id BIGSERIAL NOT NULL,
    day DATE NOT NULL,
    user_id BIGINT NOT NULL,
    events BIGINT NOT NULL,
    views BIGINT NOT NULL,
    reads BIGINT NOT NULL,
    clicks BIGINT NOT NULL,
    searches BIGINT NOT NULL,
    shares BIGINT NOT NULL,
    sessions BIGINT NOT NULL,
    articles BIGINT NOT NULL,
    first_seen_at TIMESTAMP WITH TIME ZONE NOT NULL,
    last_seen_at TIMESTAMP WITH TIME ZONE NOT NULL,
    computed_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_user_engagement_daily PRIMARY KEY (id),
    CONSTRAINT uq_user_engagement_daily_day_user_id UNIQUE (day, user_id)
);

CREATE TABLE analytics_aggregate (
    id BIGSERIAL NOT NULL,
    bucket VARCHAR(20) NOT NULL,
    name VARCHAR(200) NOT NULL,
    period VARCHAR(50) NOT NULL,
    event_type VARCHAR(200) NOT NULL,
    seq INTEGER NOT NULL,
    count BIGINT NOT NULL,
    meta JSONB,
    computed_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_analytics_aggregate PRIMARY KEY (id),
    CONSTRAINT uq_analytics_aggregate_bucket_name_period_event_type_seq UNIQUE (bucket, name, period, event_type, seq)
);

CREATE TABLE analytics_watermark (
    name VARCHAR(100) NOT NULL,
    last_event_id BIGINT NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_analytics_watermark PRIMARY KEY (name)
);

UPDATE alembic_version SET version_num='0008' WHERE alembic_version.version_num = '0007';

-- Running upgrade 0008 -> 0009

CREATE TABLE file (
    id BIGSERIAL NOT NULL,
    path VARCHAR(1000) NOT NULL,
    content_type VARCHAR(200),
    bytes BIGINT,
    width INTEGER,
    height INTEGER,
    format VARCHAR(20),
    status VARCHAR(20) NOT NULL,
    error TEXT,
    job_id VARCHAR(100),
    optimized_at TIMESTAMP WITH TIME ZONE,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    updated_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_file PRIMARY KEY (id),
    CONSTRAINT ck_file_status CHECK (status IN ('uploaded', 'optimized', 'failed'))
);

CREATE TABLE file_variant (
    id BIGSERIAL NOT NULL,
    file_id BIGINT NOT NULL,
    path VARCHAR(1000) NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    bytes BIGINT NOT NULL,
    format VARCHAR(20) NOT NULL,
    created_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_file_variant PRIMARY KEY (id),
    CONSTRAINT fk_file_variant_file_id_file FOREIGN KEY(file_id) REFERENCES file (id) ON DELETE CASCADE,
    CONSTRAINT uq_file_variant_file_id_width_format UNIQUE (file_id, width, format)
);

CREATE INDEX ix_file_variant_file_id ON file_variant (file_id);

CREATE TABLE search_document (
    id BIGSERIAL NOT NULL,
    article_id BIGINT NOT NULL,
    translation_id BIGINT,
    source VARCHAR(20) NOT NULL,
    locale VARCHAR(20) NOT NULL,
    title VARCHAR(500) NOT NULL,
    body TEXT NOT NULL,
    tags JSONB NOT NULL,
    job_id VARCHAR(100),
    indexed_at TIMESTAMP WITH TIME ZONE DEFAULT now() NOT NULL,
    CONSTRAINT pk_search_document PRIMARY KEY (id),
    CONSTRAINT ck_search_document_source CHECK (source IN ('article', 'translation')),
    CONSTRAINT fk_search_document_article_id_article FOREIGN KEY(article_id) REFERENCES article (id) ON DELETE CASCADE,
    CONSTRAINT fk_search_document_translation_id_translation FOREIGN KEY(translation_id) REFERENCES translation (id) ON DELETE CASCADE,
    CONSTRAINT uq_search_document_article_id_locale UNIQUE (article_id, locale)
);

CREATE INDEX ix_search_document_locale ON search_document (locale);

CREATE INDEX ix_search_document_translation_id ON search_document (translation_id);

ALTER TABLE search_document ADD COLUMN search_vector TSVECTOR GENERATED ALWAYS AS (setweight(to_tsvector('simple'::regconfig, title), 'A') || setweight(jsonb_to_tsvector('simple'::regconfig, tags, '["string"]'), 'B') || setweight(to_tsvector('simple'::regconfig, body), 'C')) STORED NOT NULL;

CREATE INDEX ix_search_document_search_vector ON search_document USING gin (search_vector);

UPDATE alembic_version SET version_num='0009' WHERE alembic_version.version_num = '0008';

COMMIT;

