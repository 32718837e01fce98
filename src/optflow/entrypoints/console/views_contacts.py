"""Contacts: search and list (with each channel's consent as a badge), create and edit."""

from __future__ import annotations

import re

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from ...domain import commands as c
from ...domain.addresses import looks_like_email, normalize_email, normalize_phone
from ...domain.languages import LANGUAGE_NAMES
from ...domain.model import InvalidInput
from ..api_common import contact_out, handle, system_of
from .security import CONSOLE_PREFIX, Person, flash, form_value, page, render, see_other

PAGE_SIZE = 25
FORM_FIELDS = ("name", "phone", "email", "time_zone", "region", "language")
_PHONE_LIKE = re.compile(r"[+()0-9 .\-]{7,}")


def search_terms(query: str) -> tuple[str | None, str | None]:
    """(address, name): one search box finds a phone number, an email address or part of a name."""
    query = query.strip()[:200]
    if not query:
        return None, None
    try:
        if looks_like_email(query):
            return normalize_email(query), None
        if _PHONE_LIKE.fullmatch(query):
            return normalize_phone(query), None
    except InvalidInput:
        pass
    return None, query


def _int_arg(request: Request, name: str, default: int) -> int:
    raw = request.args.get(name) or ""
    return int(raw) if raw.isdigit() and len(raw) < 9 else default


def register(bp: Blueprint) -> None:
    @bp.get("/contacts")
    @page("agent")
    async def contacts(request: Request, person: Person) -> HTTPResponse:
        query = (request.args.get("q") or "")[:200]
        offset = _int_arg(request, "offset", 0)
        address, name = search_terms(query)
        with system_of(request).bus.uow(read_only=True) as uow:
            rows = uow.contacts.search(person.org_id, address=address, name=name, limit=PAGE_SIZE + 1,
                                       offset=offset)
            found = [contact_out(uow, person.org_id, row.id) for row in rows[:PAGE_SIZE]]
        return render(request, "console/contacts.html", title="Contacts", contacts=found, q=query, offset=offset,
                      page_size=PAGE_SIZE, has_next=len(rows) > PAGE_SIZE)

    @bp.get("/contacts/new")
    @page("agent")
    async def new_contact(request: Request, person: Person) -> HTTPResponse:
        return render(request, "console/contact_form.html", title="New contact", contact=None, values={},
                      language_names=LANGUAGE_NAMES)

    @bp.post("/contacts")
    @page("agent")
    async def create_contact(request: Request, person: Person) -> HTTPResponse:
        values = {k: form_value(request, k).strip() for k in FORM_FIELDS}
        try:
            result = await handle(request, c.CreateContact(
                person.org_id, name=values["name"], phones=tuple(p for p in [values["phone"]] if p),
                emails=tuple(e for e in [values["email"]] if e), time_zone=values["time_zone"] or None,
                region=values["region"] or None, marketing_allowed=form_value(request, "marketing") == "on",
                language=values["language"] or None))
        except InvalidInput as exc:
            return render(request, "console/contact_form.html", status=422, title="New contact", contact=None,
                          values=values, error=str(exc), language_names=LANGUAGE_NAMES)
        return flash(request, see_other(f"{CONSOLE_PREFIX}/contacts/{result.contact_id}"), "Contact created.")

    @bp.get("/contacts/<contact_id:int>/edit")
    @page("agent")
    async def edit_contact(request: Request, person: Person, contact_id: int) -> HTTPResponse:
        with system_of(request).bus.uow(read_only=True) as uow:
            contact = contact_out(uow, person.org_id, contact_id)
        values = {"name": contact.name, "time_zone": contact.time_zone or "", "region": contact.region or "",
                  "language": contact.language or ""}
        return render(request, "console/contact_form.html", title=f"Edit {contact.name or 'contact'}",
                      contact=contact, values=values, language_names=LANGUAGE_NAMES)

    @bp.post("/contacts/<contact_id:int>/edit")
    @page("agent")
    async def update_contact(request: Request, person: Person, contact_id: int) -> HTTPResponse:
        values = {k: form_value(request, k).strip() for k in FORM_FIELDS}
        try:
            await handle(request, c.UpdateContact(
                person.org_id, contact_id, name=values["name"], time_zone=values["time_zone"],
                region=values["region"], add_phones=tuple(p for p in [values["phone"]] if p),
                add_emails=tuple(e for e in [values["email"]] if e), language=values["language"]))
        except InvalidInput as exc:
            with system_of(request).bus.uow(read_only=True) as uow:
                contact = contact_out(uow, person.org_id, contact_id)
            return render(request, "console/contact_form.html", status=422, title="Edit contact", contact=contact,
                          values=values, error=str(exc), language_names=LANGUAGE_NAMES)
        return flash(request, see_other(f"{CONSOLE_PREFIX}/contacts/{contact_id}"), "Contact saved.")
