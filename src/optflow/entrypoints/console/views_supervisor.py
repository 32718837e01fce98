"""Supervisors: the unassociated numbers (inbound messages from addresses no contact owns) with
link-to-contact, and the outbound queue (held, deferred, failed) with the reasons."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from ...domain import commands as c
from ...domain.model import InvalidInput, NotFound
from ...service_layer.overviews import outbound_queue
from ..api_common import handle, system_of
from .security import CONSOLE_PREFIX, Person, flash, form_value, page, render, see_other
from .views_contacts import search_terms

QUEUES = f"{CONSOLE_PREFIX}/queues"


def _contact_named(request: Request, person: Person, given: str) -> int:
    """The contact a supervisor names by id, phone number or email address."""
    given = given.strip()
    if given.isdigit() and len(given) < 12:
        return int(given)
    address, _ = search_terms(given)
    if address is None:
        raise InvalidInput(f"{given[:80]!r} is neither a contact number, a phone number nor an email address",
                           code="invalid_input")
    with system_of(request).bus.uow(read_only=True) as uow:
        contact_id = uow.contacts.find_by_address(person.org_id, address)
    if contact_id is None:
        raise NotFound(f"no contact has the address {address}", code="contact_not_found")
    return contact_id


def register(bp: Blueprint) -> None:
    @bp.get("/queues")
    @page("supervisor")
    async def queues(request: Request, person: Person) -> HTTPResponse:
        system = system_of(request)
        with system.bus.uow(read_only=True) as uow:
            unassociated = uow.messages.unassociated(person.org_id)
            waiting = outbound_queue(uow, person.org_id, system.clock())
        return render(request, "console/queues.html", title="Queues", unassociated=unassociated, waiting=waiting)

    @bp.post("/queues/unassociated/<message_id:int>/link")
    @page("supervisor")
    async def link_unassociated(request: Request, person: Person, message_id: int) -> HTTPResponse:
        contact_id = _contact_named(request, person, form_value(request, "contact"))
        result = await handle(request, c.LinkUnassociated(person.org_id, message_id, contact_id, person.actor))
        detail = "; the opt-in request was queued" if result.message_id else ""
        return flash(request, see_other(QUEUES), f"Linked to contact {contact_id}{detail}.")
