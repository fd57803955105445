"""The admin service's settings: its bearer tokens, rate limit, CORS and live events
(``TQ_ADMIN_*``), read by ``tq serve admin`` and ``tq token create``."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, PositiveFloat, SecretStr
from tq.settings import TqSettings


class AdminSettings(TqSettings):
    admin_jwt_issuer: str = Field("tq", description="`iss` every admin token must carry")
    admin_jwt_audience: str = Field("tq-admin", description="`aud` every admin token must carry")
    admin_jwt_key: SecretStr | None = Field(
        None,
        description="HMAC key (at least 32 bytes; from a Secret in a cluster) that signs and verifies the "
        "admin API's bearer tokens; unset: `tq serve admin` and `tq token create` refuse to run",
    )
    admin_jwt_algorithm: Literal["HS256", "HS384", "HS512"] = Field(
        "HS256", description="`HS256`, `HS384` or `HS512`"
    )
    admin_viewer_enabled: bool = Field(
        False,
        description="tokens with role `viewer` may call the admin API's reads (never its changes or live "
        "events)",
    )
    admin_rate_limit: int = Field(
        600,
        ge=1,
        description="requests per token per `TQ_ADMIN_RATE_WINDOW_S` (shared by every admin replica, in "
        "Redis); over it: 429 with `Retry-After`",
    )
    admin_rate_window_s: PositiveFloat = Field(60.0, description="the rate limit's sliding window")
    admin_cors_origins: list[str] = Field(
        default_factory=list,
        description="origins allowed to call the admin API cross-origin, as JSON; empty: CORS closed",
    )
    admin_sse_buffer: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="recent live events kept for an SSE client's `Last-Event-ID` resume",
    )
    admin_client_queue: int = Field(
        1000,
        ge=1,
        le=1_000_000,
        description="events queued for one live client; a client this far behind is dropped (it may "
        "reconnect and resume)",
    )
    admin_heartbeat_s: PositiveFloat = Field(15.0, description="live streams send a `heartbeat` this often")
    admin_token_max_ttl_s: PositiveFloat = Field(
        30 * 86400.0,
        description="the longest lifetime (`exp` - `iat`) of an admin token: `tq token create` refuses a "
        "longer `--ttl` and the API refuses (401) a token that claims one; also how long a revocation "
        "is kept",
    )
    admin_max_body_bytes: int = Field(
        1_048_576,
        ge=1024,
        le=1 << 30,
        description="the largest request body the admin API accepts; a longer one: 413 (the token is "
        "checked first: without a valid one, 401 and the body is never read)",
    )
    admin_refusal_audit_window_s: PositiveFloat = Field(
        60.0,
        description="a token's refused calls (403, 429, 413) write at most one summarising audit row "
        "per this many seconds; every refusal is counted in `tq_admin_refused_total`",
    )

    admin_produce_rate_limit: int = Field(
        6000,
        ge=1,
        description="enqueue calls (`POST /api/jobs/...`; a batch is one call) per token per "
        "`TQ_ADMIN_RATE_WINDOW_S`, a budget apart from `TQ_ADMIN_RATE_LIMIT`; over it: 429 with "
        "`Retry-After`",
    )
    admin_produce_batch_max: int = Field(
        1000, ge=1, le=100_000, description="the most jobs one batch enqueue call may carry"
    )
    admin_produce_audit_window_s: PositiveFloat = Field(
        60.0,
        description="enqueue calls are audited as one summary row per token, queue, job and outcome "
        "per this many seconds (with the counts), not one row per call",
    )


@lru_cache(maxsize=1)
def get_admin_settings() -> AdminSettings:
    return AdminSettings()
