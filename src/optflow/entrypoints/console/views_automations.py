"""The contact's automations: the flows it is enrolled in, their step and next run, and removing
the contact from one (after a confirmation page, which works without JavaScript)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from ...domain import commands as c
from ...domain.model import DomainError
from ...domain.records import ENDED, RUNNING
from ..api_common import handle, system_of
from .security import CONSOLE_PREFIX, ConsoleRefusal, Person, flash, page, render, see_other


def register(bp: Blueprint) -> None:
    @bp.get("/contacts/<contact_id:int>/automations")
    @page("agent")
    async def automations(request: Request, person: Person, contact_id: int) -> HTTPResponse:
        with system_of(request).bus.uow(read_only=True) as uow:
            contact = uow.contacts.get(person.org_id, contact_id)
            rows = uow.enrollments.for_contact(contact_id, (*RUNNING, *ENDED))
            steps = {row.id: uow.enrollments.history(row.id) for row in rows}
        return render(request, "console/automations.html", title=f"Automations of {contact.name or 'contact'}",
                      contact=contact, active=[r for r in rows if r.running], ended=[r for r in rows if not r.running],
                      steps=steps, tab="automations")

    @bp.get("/contacts/<contact_id:int>/automations/<enrollment_id:int>/remove")
    @page("agent")
    async def confirm_removal(request: Request, person: Person, contact_id: int, enrollment_id: int) -> HTTPResponse:
        with system_of(request).bus.uow(read_only=True) as uow:
            contact = uow.contacts.get(person.org_id, contact_id)
            row = uow.enrollments.get(enrollment_id)
        if row is None or row.contact_id != contact_id or row.org_id != person.org_id:
            raise ConsoleRefusal(404, "Not found", f"no enrolment {enrollment_id} of this contact")
        return render(request, "console/automation_remove.html", title="Remove from automation", contact=contact,
                      enrollment=row, tab="automations")

    @bp.post("/contacts/<contact_id:int>/automations/<enrollment_id:int>/remove")
    @page("agent")
    async def remove(request: Request, person: Person, contact_id: int, enrollment_id: int) -> HTTPResponse:
        back = see_other(f"{CONSOLE_PREFIX}/contacts/{contact_id}/automations")
        try:
            await handle(request, c.RemoveEnrollment(person.org_id, contact_id, enrollment_id, person.actor))
        except DomainError as exc:
            return flash(request, back, f"Not removed: {exc}", "error")
        return flash(request, back, "Removed from the automation.")
