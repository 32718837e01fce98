"""Flows, for marketing teams: the loaded flows with their trigger, version, validation state and
how many contacts are at each step; the contacts in a flow, each removable; a dry run of a flow
for one contact (what it would send, when, and the policy's answer), which writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from ...bootstrap import System
from ...domain import commands as c
from ...domain.model import DomainError, InvalidInput
from ...service_layer.flow_dry_run import DryRun, dry_run
from ...service_layer.overviews import flows_overview
from ..api_common import handle, system_of
from .security import CONSOLE_PREFIX, ConsoleRefusal, Person, flash, form_value, off_the_loop, page, render, see_other
from .views_supervisor import _contact_named

FLOWS = f"{CONSOLE_PREFIX}/flows"


def _dry_run(system: System, org_id: int, contact_id: int, flow: str, at: datetime) -> DryRun:
    return dry_run(system.bus.uow, system.flows, org_id, contact_id, flow, at)


def _start(raw: str, now: datetime) -> datetime:
    if not raw:
        return now
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise ConsoleRefusal(422, "Not a time", f"{raw[:40]!r} is not a date and time such as 2026-11-23T09:00.") \
            from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def register(bp: Blueprint) -> None:
    @bp.get("/flows")
    @page("agent")
    async def flows(request: Request, person: Person) -> HTTPResponse:
        system = system_of(request)
        with system.bus.uow(read_only=True) as uow:
            overview = flows_overview(uow, system.flows, person.org_id)
        return render(request, "console/flows.html", title="Flows", flows=overview)

    @bp.get("/flows/<name:str>")
    @page("agent")
    async def flow(request: Request, person: Person, name: str) -> HTTPResponse:
        system = system_of(request)
        with system.bus.uow(read_only=True) as uow:
            found = next((f for f in flows_overview(uow, system.flows, person.org_id) if f.name == name), None)
            if found is None:
                raise ConsoleRefusal(404, "Not found", f"There is no flow called {name[:80]!r}.")
            enrolled = uow.overviews.running_in_flow(person.org_id, name)
        run, error = None, None
        contact = (request.args.get("contact") or "").strip()
        if contact:
            try:
                contact_id = _contact_named(request, person, contact)
                at = _start((request.args.get("at") or "").strip(), system.clock())
                run = await off_the_loop(_dry_run, system, person.org_id, contact_id, name, at)
            except DomainError as exc:
                error = str(exc)
        return render(request, "console/flow.html", status=422 if error else 200, title=f"Flow {name}", flow=found,
                      enrolled=enrolled, run=run, error=error, contact=contact,
                      at=(request.args.get("at") or "")[:40])

    @bp.post("/flows/<name:str>/enrollments/<enrollment_id:int>/remove")
    @page("agent")
    async def remove_from_flow(request: Request, person: Person, name: str, enrollment_id: int) -> HTTPResponse:
        raw = form_value(request, "contact_id")
        if not raw.isdigit() or len(raw) > 11:
            raise InvalidInput("the form names no contact", code="invalid_input")
        await handle(request, c.RemoveEnrollment(person.org_id, int(raw), enrollment_id, person.actor))
        return flash(request, see_other(f"{FLOWS}/{name}"), f"Contact {raw} was removed from {name}.")
