"""The admin API's FastAPI dependencies for who may call: ``Reader`` and ``Owner`` check the bearer
token (``auth``), count the call against the token's rate limit (``ratelimit``) and check the role;
the caller is kept in ``request.state.principal`` for the audit row (``auditing``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tq_services.admin.auth import Principal, authenticate, authorize
from tq_services.admin.errors import ApiError
from tq_services.admin.ratelimit import SlidingWindow
from tq_services.admin.state import admin_state

_bearer = HTTPBearer(auto_error=False, description="a JWT from `tq token create`")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def _guard(
    request: Request, credentials: HTTPAuthorizationCredentials | None, write: bool
) -> Principal:
    state = admin_state(request)
    principal = authenticate(state.admin_settings, credentials.credentials if credentials else None)
    request.state.principal = principal
    wait_s = await state.limiter.hit(principal.token_id)
    if wait_s:
        raise ApiError(
            429,
            f"rate limit of {state.admin_settings.admin_rate_limit} requests per "
            f"{state.admin_settings.admin_rate_window_s:g} s exceeded",
            headers={"Retry-After": SlidingWindow.retry_after(wait_s)},
        )
    authorize(state.admin_settings, principal, write=write)
    return principal


async def reader(request: Request, credentials: Credentials) -> Principal:
    return await _guard(request, credentials, write=False)


async def owner(request: Request, credentials: Credentials) -> Principal:
    return await _guard(request, credentials, write=True)


Reader = Annotated[Principal, Depends(reader)]
Owner = Annotated[Principal, Depends(owner)]
