"""The agent console: server-rendered pages under /console for people who sign in with an email
and a password. Pages live in `views_*.py` (each has `register(bp)`), templates in
`templates/console/`, the one stylesheet and the vendored htmx in `static/`. How to add a page:
docs/console.md."""

from __future__ import annotations

from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, redirect
from sanic_ext.extensions.openapi import openapi

from ...domain.model import DomainError, NotFound
from . import (
    views_admin,
    views_auth,
    views_automations,
    views_contact,
    views_contacts,
    views_conversation,
    views_flows,
    views_history,
    views_inbox,
    views_reports,
    views_supervisor,
)
from .security import CONSOLE_PREFIX, STATIC, ConsoleRefusal, refusal_page

# Each module's `register(bp)` adds its routes; add a new module here.
VIEW_MODULES = (views_auth, views_contacts, views_contact, views_conversation, views_history, views_automations,
                views_inbox, views_supervisor, views_reports, views_flows, views_admin)


def console_blueprint() -> Blueprint:
    bp = Blueprint("console", url_prefix=CONSOLE_PREFIX)
    for module in VIEW_MODULES:
        module.register(bp)

    @bp.exception(ConsoleRefusal)
    async def refused(request: Request, exc: ConsoleRefusal) -> HTTPResponse:
        return refusal_page(request, exc)

    @bp.exception(NotFound)
    async def not_found(request: Request, exc: NotFound) -> HTTPResponse:
        return refusal_page(request, ConsoleRefusal(404, "Not found", str(exc)))

    @bp.exception(DomainError)
    async def refused_by_rules(request: Request, exc: DomainError) -> HTTPResponse:
        return refusal_page(request, ConsoleRefusal(409, "Refused", str(exc)))

    return bp


def install_console(app: Sanic) -> None:
    """The console's routes, its static files, and `/`, `/console` and `/admin` leading to it."""
    app.static(f"{CONSOLE_PREFIX}/static", STATIC, name="console_static")
    app.blueprint(console_blueprint())

    @app.get("/", name="root_to_console")
    @app.get(CONSOLE_PREFIX, name="console_root", strict_slashes=False)
    @openapi.exclude()
    async def root(request: Request) -> HTTPResponse:
        return redirect(f"{CONSOLE_PREFIX}/contacts", status=303)

    @app.get("/admin", name="admin_to_console", strict_slashes=False)
    @openapi.exclude()
    async def admin(request: Request) -> HTTPResponse:
        return redirect(f"{CONSOLE_PREFIX}/admin/settings", status=303)
