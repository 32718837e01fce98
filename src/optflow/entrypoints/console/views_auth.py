"""Signing in and out of the console."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext.extensions.openapi import openapi

from ...bootstrap import System
from ...service_layer import console_auth
from .security import (
    CONSOLE_PREFIX,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    ConsoleRefusal,
    Person,
    form_value,
    new_sign_in_csrf,
    off_the_loop,
    page,
    render,
    safe_next,
    see_other,
    set_cookie,
    sign_in_csrf_ok,
)


def _sign_in(system: System, email: str, password: str, ip: str) -> console_auth.SignedIn:
    with system.bus.uow() as uow:
        return console_auth.sign_in(uow, email, password, ip, system.clock())


def _sign_out(system: System, token: str) -> None:
    with system.bus.uow() as uow:
        console_auth.sign_out(uow, token)
        uow.commit()


def _sign_in_page(request: Request, status: int = 200, error: str | None = None, email: str = "",
                  headers: dict[str, str] | None = None) -> HTTPResponse:
    token = request.cookies.get(SIGN_IN_COOKIE) or new_sign_in_csrf()
    request.ctx.sign_in_csrf = token
    response = render(request, "console/sign_in.html", status=status, headers=headers, title="Sign in",
                      error=error, email=email, next=safe_next(request.args.get("next") or form_value(request, "next")))
    set_cookie(request, response, SIGN_IN_COOKIE, token)
    return response


def register(bp: Blueprint) -> None:
    @bp.get("/sign-in")
    @openapi.exclude()
    async def sign_in_form(request: Request) -> HTTPResponse:
        """The sign-in form (its CSRF token is tied to a cookie: there is no session yet)."""
        return _sign_in_page(request)

    @bp.post("/sign-in")
    @openapi.exclude()
    async def sign_in(request: Request) -> HTTPResponse:
        if not sign_in_csrf_ok(request):
            raise ConsoleRefusal(403, "Form expired", "The sign-in form was missing its security token. "
                                 "Reload the page and sign in again.")
        email, password = form_value(request, "email"), form_value(request, "password")
        system: System = request.app.ctx.system
        ip = request.remote_addr or request.ip or "unknown"
        try:
            signed_in: console_auth.SignedIn = await off_the_loop(_sign_in, system, email, password, ip)
        except console_auth.SignInThrottled as exc:
            seconds = int(exc.retry_after.total_seconds())
            return _sign_in_page(request, 429, str(exc), email, {"Retry-After": str(seconds)})
        except console_auth.SignInRefused as exc:
            return _sign_in_page(request, 401, str(exc), email)
        response = see_other(safe_next(form_value(request, "next")))
        set_cookie(request, response, SESSION_COOKIE, signed_in.token,
                   max_age=int(console_auth.SESSION_LIFETIME.total_seconds()))
        response.delete_cookie(SIGN_IN_COOKIE, path=CONSOLE_PREFIX)
        return response

    @bp.post("/sign-out")
    @page("agent")
    async def sign_out(request: Request, person: Person) -> HTTPResponse:
        system: System = request.app.ctx.system
        await off_the_loop(_sign_out, system, request.cookies.get(SESSION_COOKIE) or "")
        response = see_other(f"{CONSOLE_PREFIX}/sign-in")
        response.delete_cookie(SESSION_COOKIE, path=CONSOLE_PREFIX)
        return response
