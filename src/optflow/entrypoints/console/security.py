"""What every console page shares: who is signed in, role checks, CSRF, flash notices, rendering.

A page handler is written like this (see docs/console.md):

    @bp.get("/contacts/<contact_id:int>")
    @page("agent")
    async def contact(request: Request, person: Person, contact_id: int) -> HTTPResponse:
        return render(request, "console/contact.html", title="...", ...)

`page(role)` finds the session from its cookie (none, expired or idle: a redirect to the sign-in
page, coming back afterwards), refuses a person below `role` with a 403 page (a hidden button is
not a permission: every POST handler carries its own `page(role)`), checks the CSRF token of
every POST, and hands the handler the `Person`. The rules themselves stay in the domain and the
bus: a view turns a form into a command and the outcome into a page.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sanic import Request
from sanic.response import HTTPResponse, html, redirect
from sanic_ext.extensions.openapi import openapi

from ...domain.model import Actor, ActorKind
from ...service_layer import console_auth
from ..auth import RANK, Caller

CONSOLE_PREFIX = "/console"
SESSION_COOKIE = "optflow_session"
SIGN_IN_COOKIE = "optflow_sign_in"  # the CSRF token of the sign-in form, before any session
FLASH_COOKIE = "optflow_flash"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
# Only optflow's own scripts, styles and forms; no inline script; never inside a frame.
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
TEMPLATES = Path(__file__).with_name("templates")
STATIC = Path(__file__).with_name("static")


@dataclass(frozen=True)
class Person:
    """Who is signed in: an agent row with a console sign-in."""

    agent_id: int
    org_id: int
    name: str
    role: str
    email: str
    session_id: int
    csrf_token: str

    @property
    def actor(self) -> Actor:
        return Actor(ActorKind.AGENT, str(self.agent_id), self.role)

    @property
    def caller(self) -> Caller:
        return Caller(self.agent_id, self.org_id, self.name, self.role)

    def may(self, role: str) -> bool:
        """Whether the person holds `role` or a higher one (agent < supervisor < admin)."""
        return RANK[self.role] >= RANK[role]


class ConsoleRefusal(Exception):
    """Ends a console request with an HTML page: a 403, a 404, a 429 ... (see `refusal_page`)."""

    def __init__(self, status: int, title: str, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.headers = dict(headers or {})


# ------------------------------------------------------------------------------------ templates


@functools.cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(("html",)),
                      trim_blocks=True, lstrip_blocks=True)
    env.globals.update(prefix=CONSOLE_PREFIX, csrf_field=CSRF_FIELD, may=_may)
    env.filters["when"] = _when
    return env


def _may(person: Person | None, role: str) -> bool:
    return person is not None and person.may(role)


def _when(value: Any, missing: str = "–") -> str:
    if value is None:
        return missing
    return f"{value:%Y-%m-%d %H:%M} UTC"


def render(request: Request, template: str, status: int = 200, headers: Mapping[str, str] | None = None,
           **context: Any) -> HTTPResponse:
    """The template with the person, their CSRF token and the flash notice of the last action."""
    person: Person | None = getattr(request.ctx, "person", None)
    notice = getattr(request.ctx, "flash", None)
    body = environment().get_template(template).render(
        person=person, csrf_token=person.csrf_token if person else getattr(request.ctx, "sign_in_csrf", ""),
        notice=notice, path=request.path, **context)
    response = html(body, status=status, headers=dict(headers or {}))
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["Referrer-Policy"] = "same-origin"
    if notice is not None:
        response.delete_cookie(FLASH_COOKIE, path=CONSOLE_PREFIX)
    return response


def refusal_page(request: Request, refusal: ConsoleRefusal) -> HTTPResponse:
    return render(request, "console/refused.html", status=refusal.status, headers=refusal.headers,
                  title=refusal.title, message=str(refusal))


# ------------------------------------------------------------------------------------ cookies


def is_https(request: Request) -> bool:
    """Behind a proxy, the public URL says whether the browser speaks HTTPS."""
    public_url = str(getattr(request.app.ctx.config, "public_url", "") or "")
    return request.scheme == "https" or public_url.startswith("https://")


def set_cookie(request: Request, response: HTTPResponse, name: str, value: str, max_age: int | None = None) -> None:
    response.add_cookie(name, value, path=CONSOLE_PREFIX, httponly=True, samesite="Lax",
                        secure=is_https(request), max_age=max_age)


def csrf_for(session_token: str) -> str:
    """The session's CSRF token: derived from the session's secret token, so nothing more is
    stored and a copy of the database reveals neither."""
    return hmac.new(session_token.encode(), b"optflow console csrf", hashlib.sha256).hexdigest()


def _flash_signature(session_token: str, payload: str) -> str:
    return hmac.new(session_token.encode(), b"flash:" + payload.encode(), hashlib.sha256).hexdigest()[:32]


def flash(request: Request, response: HTTPResponse, message: str, kind: str = "ok") -> HTTPResponse:
    """Show `message` on the next page (after a redirect): `kind` is ok, warning or error. The
    cookie is signed with a key only this session has."""
    token = request.cookies.get(SESSION_COOKIE) or ""
    payload = base64.urlsafe_b64encode(json.dumps([kind, message[:2000]]).encode()).decode()
    set_cookie(request, response, FLASH_COOKIE, payload + "." + _flash_signature(token, payload))
    return response


def _read_flash(request: Request, session_token: str) -> dict[str, str] | None:
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw or "." not in raw:
        return None
    payload, _, signature = raw.rpartition(".")
    if not hmac.compare_digest(signature, _flash_signature(session_token, payload)):
        return None
    try:
        kind, message = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (ValueError, TypeError):
        return None
    return {"kind": str(kind), "message": str(message)}


def see_other(location: str) -> HTTPResponse:
    """After a POST: the browser GETs `location` (303), so a reload does not post again."""
    return redirect(location, status=303)


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console path only (never another site)."""
    if target and target.startswith(CONSOLE_PREFIX + "/") and not target.startswith("//"):
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc:
            return target
    return CONSOLE_PREFIX + "/contacts"


# ------------------------------------------------------------------------------------ sessions


def _record_seen(system: Any, session_id: int, now: Any) -> None:
    with system.bus.uow() as uow:
        console_auth.record_seen(uow, session_id, now)
        uow.commit()


async def _current(request: Request) -> Person | None:
    """The signed-in person of the request, or None; records that the session was seen (a write,
    so off the event loop: it may wait for SQLite's lock)."""
    token = request.cookies.get(SESSION_COOKIE) or ""
    if not token:
        return None
    system = request.app.ctx.system
    now = system.clock()
    with system.bus.uow(read_only=True) as uow:
        found = console_auth.session_for(uow, token, now)
    if found is None:
        return None
    session, agent = found
    if console_auth.seen_is_stale(session, now):
        await off_the_loop(_record_seen, system, session.id, now)
    request.ctx.flash = _read_flash(request, token)
    return Person(agent.id, agent.org_id, agent.name, agent.role, agent.email or "", session.id, csrf_for(token))


def form_value(request: Request, name: str) -> str:
    """A form field as sent ("" when absent)."""
    value = request.form.get(name) if request.form else None
    return str(value) if value is not None else ""


def _csrf_ok(request: Request, expected: str) -> bool:
    sent = request.headers.get(CSRF_HEADER) or form_value(request, CSRF_FIELD)
    return bool(expected) and hmac.compare_digest(sent.encode(), expected.encode())


def sign_in_url(request: Request) -> str:
    target = request.path + (f"?{request.query_string}" if request.query_string else "")
    return f"{CONSOLE_PREFIX}/sign-in?next={quote(target, safe='')}"


Handler = Callable[..., Awaitable[HTTPResponse]]


def page(role: str) -> Callable[[Handler], Handler]:
    """Route decorator for console pages and actions (module docstring). The handler gets the
    `Person` after the request."""
    if role not in RANK:
        raise ValueError(f"unknown role {role!r}")

    def decorate(handler: Handler) -> Handler:
        @functools.wraps(handler)
        async def wrapper(request: Request, *args: Any, **kwargs: Any) -> HTTPResponse:
            person = await _current(request)
            if person is None:
                if request.method == "GET":
                    return redirect(sign_in_url(request), status=303)
                raise ConsoleRefusal(401, "Signed out", "Your session has ended. Sign in again, then repeat "
                                     "what you were doing.")
            request.ctx.person = person
            request.ctx.caller = person.caller  # the API's helpers (`caller_of`) work in views too
            if request.method not in ("GET", "HEAD") and not _csrf_ok(request, person.csrf_token):
                raise ConsoleRefusal(403, "Form expired", "This form was missing its security token or it "
                                     "belongs to another session. Go back, reload the page and try again.")
            if not person.may(role):
                raise ConsoleRefusal(403, "Not allowed", f"This needs the {role} role; you are signed in as "
                                     f"{person.role}.")
            return await handler(request, person, *args, **kwargs)

        openapi.exclude()(wrapper)
        return wrapper

    return decorate


def new_sign_in_csrf() -> str:
    return secrets.token_urlsafe(24)


def sign_in_csrf_ok(request: Request) -> bool:
    """The sign-in form's token must match its cookie (there is no session yet to tie it to)."""
    return _csrf_ok(request, request.cookies.get(SIGN_IN_COOKIE) or "")


async def off_the_loop(function: Callable[..., Any], *args: Any) -> Any:
    """Run slow work (argon2, a write that may wait for SQLite's lock) in a thread."""
    return await asyncio.to_thread(function, *args)
