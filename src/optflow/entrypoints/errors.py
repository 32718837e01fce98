"""One error format for the whole HTTP surface: `{"error": {"code": ..., "message": ...}}`."""

from __future__ import annotations

import logging

from sanic import Request, Sanic
from sanic.constants import HTTP_METHODS
from sanic.exceptions import SanicException
from sanic.response import HTTPResponse, json

from ..domain.model import DomainError, InvalidInput, NotFound, TransitionRefused

log = logging.getLogger("optflow.http")


class ApiError(SanicException):
    """An HTTP error with a stable machine-readable code."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, status_code=status)
        self.code = code


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> HTTPResponse:
    return json({"error": {"code": code, "message": message}}, status=status, headers=headers)


def status_for(exc: DomainError) -> int:
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, TransitionRefused):
        return 409
    return 409


def allowed_methods(request: Request) -> list[str]:
    """The methods the request's path answers to. Sanic names them in its 405 only for static
    paths; for a path with parameters ask the router method by method (RFC 9110 wants `Allow`)."""
    found: list[str] = []
    for method in HTTP_METHODS:
        try:
            request.app.router.get(request.path, method, request.headers.get("host"))
        except SanicException:
            continue
        found.append(str(method))
    return found or ["GET"]


def install_error_handlers(app: Sanic) -> None:
    @app.exception(DomainError)
    async def domain_error(request: Request, exc: DomainError) -> HTTPResponse:
        return error_response(status_for(exc), exc.code, str(exc))

    @app.exception(ApiError)
    async def api_error(request: Request, exc: ApiError) -> HTTPResponse:
        return error_response(exc.status_code, exc.code, str(exc))

    @app.exception(SanicException)
    async def sanic_error(request: Request, exc: SanicException) -> HTTPResponse:
        status = exc.status_code
        code = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type",
                503: "unavailable"}.get(status, "error")
        headers = {}
        if status == 405:
            headers["Allow"] = (exc.headers or {}).get("Allow") or ", ".join(allowed_methods(request))
        return error_response(status, code, str(exc) or code.replace("_", " "), headers or None)

    @app.exception(Exception)
    async def unexpected(request: Request, exc: Exception) -> HTTPResponse:
        # The route's pattern, not the path: an unsubscribe path carries a token naming an address.
        where = f"/{request.route.path}" if request.route is not None else request.path
        log.exception("unexpected error on %s %s", request.method, where)
        return error_response(500, "internal_error", "something went wrong on our side; it was logged")
