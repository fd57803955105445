"""Bearer tokens of the admin API: signed JWTs (HMAC, ``TQ_ADMIN_JWT_*``) with issuer, audience,
expiry, subject and a ``role`` claim.

``owner`` may call anything; ``viewer`` may call the read endpoints when ``TQ_ADMIN_VIEWER_ENABLED``;
``producer`` may only enqueue jobs (``produce``: ``POST /api/jobs/...``), which owners may too.
No token, a bad signature, an expired token, a wrong issuer or audience, a lifetime (``exp`` -
``iat``) over ``TQ_ADMIN_TOKEN_MAX_TTL_S``: 401 (a revoked token too: ``revocation``, which needs
Redis, is checked by ``deps``). A valid token whose role may not do the call: 403.
``tq token create`` mints tokens with ``mint_token``.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from dataclasses import dataclass
from enum import Enum

import jwt

from tq_services.admin.errors import ApiError
from tq_services.admin.settings import AdminSettings

CLOCK_SKEW_S = 60  # a token minted for the longest lifetime on a clock a little ahead still passes
MIN_KEY_BYTES = 32  # RFC 7518 3.2: an HMAC key at least as long as the hash output
BEARER_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tq-admin"'}


class Role(str, Enum):
    OWNER = "owner"
    VIEWER = "viewer"
    PRODUCER = "producer"  # enqueues jobs (``produce``) and nothing else


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject and role, a stable id of the token (its ``jti``: rate
    limit, revocation) and when it expires (epoch seconds; live streams end then)."""

    subject: str
    role: Role
    token_id: str
    expires_at: float = float("inf")


def signing_key(settings: AdminSettings) -> str:
    if settings.admin_jwt_key is None:
        raise ValueError("TQ_ADMIN_JWT_KEY is not set: the admin API has no key to sign or verify tokens")
    key = settings.admin_jwt_key.get_secret_value()
    if len(key.encode()) < MIN_KEY_BYTES:
        raise ValueError(f"TQ_ADMIN_JWT_KEY must be at least {MIN_KEY_BYTES} bytes")
    return key


def mint_token(settings: AdminSettings, *, subject: str, role: Role | str, ttl_s: float) -> str:
    """A signed token for ``subject`` with ``role``, valid for ``ttl_s`` seconds."""
    if ttl_s <= 0:
        raise ValueError("the token's lifetime must be positive")
    if ttl_s > settings.admin_token_max_ttl_s:
        raise ValueError(
            f"a token may live at most {settings.admin_token_max_ttl_s:g} s (TQ_ADMIN_TOKEN_MAX_TTL_S); "
            f"asked for {ttl_s:g} s"
        )
    now = int(time.time())
    claims = {
        "iss": settings.admin_jwt_issuer,
        "aud": settings.admin_jwt_audience,
        "sub": subject,
        "role": Role(role).value,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl_s),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, signing_key(settings), algorithm=settings.admin_jwt_algorithm)


def authenticate(settings: AdminSettings, token: str | None) -> Principal:
    """The caller a bearer token names, or ApiError 401 (a 403 is the route's decision)."""
    if not token:
        raise ApiError(
            401, "a bearer token is required (Authorization: Bearer <token>)", headers=BEARER_CHALLENGE
        )
    try:
        claims = jwt.decode(
            token,
            signing_key(settings),
            algorithms=[settings.admin_jwt_algorithm],
            audience=settings.admin_jwt_audience,
            issuer=settings.admin_jwt_issuer,
            options={"require": ["exp", "iat", "iss", "aud", "sub", "role"]},
        )
    except jwt.ExpiredSignatureError:
        raise ApiError(401, "the token has expired", headers=BEARER_CHALLENGE) from None
    except jwt.InvalidAudienceError:
        raise ApiError(401, "the token is for another audience", headers=BEARER_CHALLENGE) from None
    except jwt.InvalidIssuerError:
        raise ApiError(401, "the token is from another issuer", headers=BEARER_CHALLENGE) from None
    except jwt.InvalidSignatureError:
        raise ApiError(401, "the token's signature does not verify", headers=BEARER_CHALLENGE) from None
    except jwt.InvalidTokenError as exc:
        raise ApiError(401, f"invalid token: {exc}", headers=BEARER_CHALLENGE) from None
    subject = claims.get("sub")
    if not isinstance(subject, str) or not subject:
        raise ApiError(401, "invalid token: no subject", headers=BEARER_CHALLENGE)
    try:
        role = Role(claims.get("role"))
    except ValueError:
        raise ApiError(403, f"role {claims.get('role')!r} may not use the admin API") from None
    exp, iat = int(claims["exp"]), int(claims["iat"])  # PyJWT checked that both are whole numbers
    longest = settings.admin_token_max_ttl_s
    if exp - iat > longest or exp - time.time() > longest + CLOCK_SKEW_S:
        raise ApiError(
            401,
            f"the token lives longer than the {longest:g} s allowed (TQ_ADMIN_TOKEN_MAX_TTL_S)",
            headers=BEARER_CHALLENGE,
        )
    return Principal(
        subject=subject[:200], role=role, token_id=token_id(token, claims), expires_at=float(exp)
    )


def token_id(token: str, claims: dict[str, object]) -> str:
    """The id a token is rate-limited and revoked by: its ``jti``, else a hash of the token."""
    jti = claims.get("jti")
    return (jti if isinstance(jti, str) and jti else hashlib.sha256(token.encode()).hexdigest()[:32])[:64]


def verified_claims(settings: AdminSettings, token: str) -> dict[str, object]:
    """The claims of a token signed with our key, expired or not (``tq token revoke TOKEN``)."""
    claims: dict[str, object] = jwt.decode(
        token,
        signing_key(settings),
        algorithms=[settings.admin_jwt_algorithm],
        audience=settings.admin_jwt_audience,
        issuer=settings.admin_jwt_issuer,
        options={"verify_exp": False},
    )
    return claims


def authorize(settings: AdminSettings, principal: Principal, *, write: bool) -> None:
    """403 unless ``principal`` may make this call: owners anything, viewers reads when enabled."""
    if principal.role is Role.OWNER:
        return
    if principal.role is Role.PRODUCER:
        raise ApiError(403, "the producer role may only enqueue jobs (POST /api/jobs/...)")
    if write:
        raise ApiError(403, "only the owner role may change anything")
    if not settings.admin_viewer_enabled:
        raise ApiError(403, "the viewer role is not enabled (TQ_ADMIN_VIEWER_ENABLED)")


def authorize_enqueue(principal: Principal) -> None:
    """403 unless ``principal`` may enqueue jobs: the producer and owner roles."""
    if principal.role not in (Role.OWNER, Role.PRODUCER):
        raise ApiError(403, f"the {principal.role.value} role may not enqueue jobs (owner or producer may)")


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None
