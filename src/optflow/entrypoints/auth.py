"""API tokens and roles. Webhooks never use tokens: they authenticate by signature."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sanic import Request
from sanic.response import HTTPResponse

from ..domain.model import Actor
from ..service_layer.admin import (
    INTEGRATION_ROLE,
    ROLES,
    TokenRefused,
    check_token,
    record_token_use,
    token_hash,
    token_use_is_stale,
)
from ..service_layer.imports import actor_of_token
from .errors import ApiError

RANK = {role: rank for rank, role in enumerate(ROLES)} | {INTEGRATION_ROLE: 0}  # an integration: an agent's rights


@dataclass(frozen=True)
class Caller:
    agent_id: int
    org_id: int
    name: str
    role: str

    @property
    def actor(self) -> Actor:
        return actor_of_token(self.agent_id, self.role)


def authenticate(request: Request) -> Caller:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "send an API token as 'Authorization: Bearer <token>'")
    system = request.app.ctx.system
    now = system.clock()
    with system.bus.uow(read_only=True) as uow:
        row = uow.agents.by_token_hash(token_hash(token.strip()))
    if row is None:
        raise ApiError(401, "unauthorized", "unknown API token")
    try:
        check_token(row, now)
    except TokenRefused as exc:
        raise ApiError(401, exc.code, str(exc)) from None
    if token_use_is_stale(row, now):
        with system.bus.uow() as uow:
            record_token_use(uow, row.id, now)
            uow.commit()
    return Caller(row.id, row.org_id, row.name, row.role)


Handler = Callable[..., Awaitable[HTTPResponse]]


def require(role: str) -> Callable[[Handler], Handler]:
    """Route decorator: the caller must hold `role` or a higher one (agent < supervisor < admin)."""

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            caller = authenticate(request)
            if RANK[caller.role] < RANK[role]:
                raise ApiError(403, "forbidden", f"this action needs the {role} role; you are {caller.role}")
            request.ctx.caller = caller
            return await handler(request, *args, **kwargs)

        return wrapper

    return decorate
