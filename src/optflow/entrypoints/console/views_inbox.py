"""The inbox: the notes optflow writes for the signed-in person (an opt-in request went out, the
contact opted in or out, a held customer message is delivered now), with the unread count."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from ...service_layer import inbox as inboxes
from ..api_common import system_of
from .security import CONSOLE_PREFIX, Person, environment, flash, form_value, page, render, see_other


def _page_arg(request: Request) -> int:
    raw = request.args.get("page") or ""
    return int(raw) if raw.isdigit() and 0 < len(raw) < 7 and int(raw) > 0 else 1


def unread_notes(person: Person | None) -> int:
    """The signed-in person's unread notes, for the menu of every page (a Jinja global)."""
    if person is None:
        return 0
    with system_of(Request.get_current()).bus.uow(read_only=True) as uow:
        return inboxes.unread_count(uow, person.org_id, person.agent_id)


def register(bp: Blueprint) -> None:
    environment().globals["unread_notes"] = unread_notes

    @bp.get("/inbox")
    @page("agent")
    async def inbox(request: Request, person: Person) -> HTTPResponse:
        unread_only = request.args.get("show") == "unread"
        with system_of(request).bus.uow(read_only=True) as uow:
            found = inboxes.inbox(uow, person.org_id, person.agent_id, unread_only=unread_only,
                                  page=_page_arg(request))
        return render(request, "console/inbox.html", title=f"Inbox ({found.unread} unread)", inbox=found,
                      unread_only=unread_only)

    @bp.post("/inbox/read")
    @page("agent")
    async def mark_read(request: Request, person: Person) -> HTTPResponse:
        raw = form_value(request, "message_id")
        ids = [int(raw)] if raw.isdigit() and len(raw) < 12 else None
        system = system_of(request)
        with system.bus.uow() as uow:
            count = inboxes.mark_read(uow, person.org_id, person.agent_id, ids, system.clock())
            uow.commit()
        message = "Marked read." if ids else f"{count} note{'s' if count != 1 else ''} marked read."
        return flash(request, see_other(f"{CONSOLE_PREFIX}/inbox"), message)
