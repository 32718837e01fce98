"""A contact's consent history (its ledger, as a timeline) and the proof of consent an office hands
over when a complaint comes: a printable page and a CSV of the same entries."""

from __future__ import annotations

import csv
import io
from datetime import datetime
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, raw

from ...domain.records import Contact
from ...service_layer.unit_of_work import UnitOfWork
from ..api_common import system_of
from .security import Person, page, render
from .views_contact import agent_names, contact_cards, who

CSV_COLUMNS = ("seq", "recorded_at", "occurred_at", "address", "channel", "from_state", "to_state", "trigger",
               "method", "actor", "evidence", "source_message_id", "hash")


def ledger_entries(uow: UnitOfWork, person: Person, contact: Contact) -> list[dict[str, Any]]:
    """The contact's ledger entries, oldest first (the API's read), with who made each change."""
    addresses = [a.value for a in uow.contacts.addresses(contact.id)]
    names = agent_names(uow, person.org_id)
    entries = uow.ledger.for_contact(person.org_id, contact.id, addresses)
    for entry in entries:
        entry["actor"] = who(entry["actor_kind"], entry["actor_id"], names)
    return entries


def _spreadsheet_safe(value: Any) -> str:
    """A cell a spreadsheet shows as text: a leading =, +, - or @ would make it a formula."""
    text = "" if value is None else (value.isoformat() if isinstance(value, datetime) else str(value))
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _load(request: Request, person: Person, contact_id: int) -> tuple[Contact, list[dict[str, Any]], Any, str]:
    system = system_of(request)
    now = system.clock()
    with system.bus.uow(read_only=True) as uow:
        contact = uow.contacts.get(person.org_id, contact_id)
        entries = ledger_entries(uow, person, contact)
        cards = contact_cards(uow, person, contact, now)
        org_name = uow.orgs.get(person.org_id).name
    return contact, entries, cards, org_name


def register(bp: Blueprint) -> None:
    @bp.get("/contacts/<contact_id:int>/history")
    @page("agent")
    async def history(request: Request, person: Person, contact_id: int) -> HTTPResponse:
        contact, entries, _, _ = _load(request, person, contact_id)
        return render(request, "console/history.html", title=f"History of {contact.name or 'contact'}",
                      contact=contact, entries=list(reversed(entries)), tab="history")

    @bp.get("/contacts/<contact_id:int>/proof")
    @page("agent")
    async def proof(request: Request, person: Person, contact_id: int) -> HTTPResponse:
        contact, entries, cards, org_name = _load(request, person, contact_id)
        return render(request, "console/proof.html", title=f"Proof of consent: {contact.name or contact.id}",
                      contact=contact, entries=entries, cards=cards, org_name=org_name,
                      generated_at=system_of(request).clock())

    @bp.get("/contacts/<contact_id:int>/proof.csv")
    @page("agent")
    async def proof_csv(request: Request, person: Person, contact_id: int) -> HTTPResponse:
        contact, entries, _, _ = _load(request, person, contact_id)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for entry in entries:
            writer.writerow([_spreadsheet_safe(entry.get(column)) for column in CSV_COLUMNS])
        return raw(out.getvalue().encode("utf-8"), content_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="consent-proof-contact-{contact.id}.csv"',
            "Cache-Control": "no-store"})
