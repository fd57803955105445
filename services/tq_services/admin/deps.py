"""The admin API's FastAPI dependencies for who may call: ``Reader`` and ``Owner`` check the bearer
token (``auth``; not revoked: ``revocation``), count the call against the token's rate limit
(``ratelimit``) and check the role; the caller is kept in ``request.state.principal`` for the audit
row (``auditing``). ``guard`` is the same check, run once per request: the audited routes run it
before the request's body is parsed (so a call with an invalid body is still rate-limited and
audited), and the dependency then finds it done."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tq_services.admin.auth import BEARER_CHALLENGE, Principal, authenticate, authorize, bearer
from tq_services.admin.errors import ApiError
from tq_services.admin.ratelimit import SlidingWindow
from tq_services.admin.revocation import is_revoked
from tq_services.admin.state import AdminState, admin_state

VERIFIED = "verified_principal"  # request.state: the caller api.BodyGuard already checked
_bearer = HTTPBearer(auto_error=False, description="a JWT from `tq token create`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def verified(state: AdminState, token: str | None) -> Principal:
    """The caller a token names, refusing (401) a bad, expired or revoked one."""
    principal = authenticate(state.admin_settings, token)
    if await is_revoked(state.redis, principal.token_id):
        raise ApiError(401, "the token has been revoked", headers=BEARER_CHALLENGE)
    return principal


async def rate_limited(state: AdminState, principal: Principal) -> None:
    """Count one call of ``principal``; 429 with ``Retry-After`` when over the limit."""
    await over_limit(state.limiter, principal, "rate limit of {limit} requests per {window_s} s exceeded")


async def over_limit(limiter: SlidingWindow, principal: Principal, refusal: str) -> None:
    """Count one call of ``principal`` in ``limiter``; over it, 429 with ``Retry-After`` and the
    message ``refusal`` (with the limiter's ``{limit}`` and ``{window_s}`` filled in)."""
    wait_s = await limiter.hit(principal.token_id)
    if wait_s:
        raise ApiError(
            429,
            refusal.format(limit=limiter.limit, window_s=f"{limiter.window_ms / 1000:g}"),
            headers={"Retry-After": SlidingWindow.retry_after(wait_s)},
        )


async def caller(request: Request) -> Principal:
    """The request's token checked (401 for a bad or revoked one) and kept as the call's actor."""
    checked: Principal | None = getattr(request.state, VERIFIED, None)
    if checked is not None:  # a request with a body: api.BodyGuard checked it before reading it
        request.state.principal = checked
        return checked
    state = admin_state(request)
    principal = authenticate(state.admin_settings, bearer(request.headers.get("authorization")))
    request.state.principal = principal  # known from here on: a failure in Redis is audited
    if await is_revoked(state.redis, principal.token_id):
        request.state.principal = None  # a revoked token is no actor: no row, like any 401
        raise ApiError(401, "the token has been revoked", headers=BEARER_CHALLENGE)
    return principal


async def guard(request: Request, *, write: bool) -> Principal:
    """Token, revocation, rate limit and role of one request, checked once."""
    done: tuple[Principal, bool] | None = getattr(request.state, "guarded", None)
    if done is not None and (done[1] or not write):
        return done[0]
    state = admin_state(request)
    principal = await caller(request)
    await rate_limited(state, principal)
    authorize(state.admin_settings, principal, write=write)
    request.state.guarded = (principal, write)
    return principal


async def reader(request: Request, _credentials: Credentials) -> Principal:
    return await guard(request, write=False)


async def owner(request: Request, _credentials: Credentials) -> Principal:
    return await guard(request, write=True)


Reader = Annotated[Principal, Depends(reader)]
Owner = Annotated[Principal, Depends(owner)]
