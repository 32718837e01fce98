"""Admins: org and sub-org settings, template overrides with a live preview, and people.

Every change goes through the service functions the REST API uses (`service_layer/admin.py`,
`console_auth.set_sign_in`), so the same validation applies; a refusal is shown beside the field
it is about, with the form as it was sent."""

from __future__ import annotations

import secrets
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from ...bootstrap import System
from ...domain.model import Channel, DomainError, Mode, Purpose
from ...domain.templates import TEMPLATE_NAMES
from ...service_layer import admin, console_auth
from ..api_common import system_of
from ..api_org import agent_out
from .security import CONSOLE_PREFIX, ConsoleRefusal, Person, flash, form_value, off_the_loop, page, render, see_other
from .settings_form import PRESETS, changes_from_form, form_values

ADMIN = f"{CONSOLE_PREFIX}/admin"


def _org_arg(request: Request, person: Person) -> int:
    raw = request.args.get("org") or form_value(request, "org")
    return int(raw) if raw.isdigit() and len(raw) < 12 else person.org_id


def _settings_page(request: Request, person: Person, org_id: int, *, values: dict[str, Any] | None = None,
                   problems: dict[str, list[str]] | None = None, status: int = 200) -> HTTPResponse:
    with system_of(request).bus.uow(read_only=True) as uow:
        org = admin.managed_org(uow, person.org_id, org_id)
        orgs = admin.orgs_under(uow, person.org_id)
        settings = uow.orgs.settings(org.id)
        own = uow.orgs.own_settings(org.id)
    return render(request, "console/admin_settings.html", status=status, title=f"Settings of {org.name}", org=org,
                  orgs=orgs, values=values or form_values(settings), own=own, problems=problems or {},
                  channels=list(Channel), modes=list(Mode), purposes=list(Purpose), presets=PRESETS,
                  caps=settings.effective_caps())


def _templates_page(request: Request, person: Person, org_id: int, name: str, source: str | None = None, *,
                    status: int = 200, problem: str | None = None) -> HTTPResponse:
    system = system_of(request)
    with system.bus.uow(read_only=True) as uow:
        org = admin.managed_org(uow, person.org_id, org_id)
        own = dict(uow.orgs.settings(org.id).templates)
        if source is None:
            source = own.get(name, "")
        preview = admin.preview_template(uow, system.services.renderer, org.id, name, source)
    return render(request, "console/admin_templates.html", status=status, title="Message templates", org=org,
                  orgs=_orgs(request, person), names=TEMPLATE_NAMES, name=name, source=source, overridden=own,
                  preview=preview, problem=problem or preview.problem)


def _orgs(request: Request, person: Person) -> list[Any]:
    with system_of(request).bus.uow(read_only=True) as uow:
        return admin.orgs_under(uow, person.org_id)


def _template_name(request: Request) -> str:
    name = request.args.get("name") or form_value(request, "name") or TEMPLATE_NAMES[0]
    if name not in TEMPLATE_NAMES:
        raise ConsoleRefusal(404, "Not found", f"There is no template called {name[:80]!r}.")
    return name


def _people_page(request: Request, person: Person, *, new_password: tuple[str, str] | None = None,
                 error: str | None = None, status: int = 200) -> HTTPResponse:
    system = system_of(request)
    with system.bus.uow(read_only=True) as uow:
        people = [(row, agent_out(row, system.clock())) for row in uow.agents.for_org(person.org_id)]
    return render(request, "console/admin_people.html", status=status, title="People", people=people,
                  roles=admin.ROLES, new_password=new_password, error=error)


def _add_person(system: System, org_id: int, name: str, role: str, email: str, password: str) -> admin.NewAgent:
    with system.bus.uow() as uow:
        agent = admin.add_agent(uow, org_id, name, role, system.clock())
        console_auth.set_sign_in(uow, org_id, agent.id, email, password)
        uow.commit()
    return agent


def _reset_password(system: System, org_id: int, agent_id: int, password: str) -> str:
    with system.bus.uow() as uow:
        row = uow.agents.in_org(org_id, agent_id)
        if not row.email:
            raise DomainError(f"{row.name} has no console sign-in yet: add one with an email address",
                              code="no_sign_in")
        console_auth.set_sign_in(uow, org_id, agent_id, row.email, password)
        uow.commit()
    return row.name


def _not_yourself(person: Person, agent_id: int, what: str) -> None:
    # An admin who demoted or locked out themselves might be the last one.
    if agent_id == person.agent_id:
        raise ConsoleRefusal(409, "Refused", f"You cannot {what} yourself; ask another admin.")


def register(bp: Blueprint) -> None:
    # ------------------------------------------------------------------------------ settings

    @bp.get("/admin/settings")
    @page("admin")
    async def settings_page(request: Request, person: Person) -> HTTPResponse:
        return _settings_page(request, person, _org_arg(request, person))

    @bp.post("/admin/settings")
    @page("admin")
    async def save_settings(request: Request, person: Person) -> HTTPResponse:
        system = system_of(request)
        org_id = _org_arg(request, person)
        with system.bus.uow() as uow:
            org = admin.managed_org(uow, person.org_id, org_id)
            changes, problems = changes_from_form(lambda name: form_value(request, name), uow.orgs.settings(org.id))
            if not problems and changes:
                try:
                    resolved = admin.update_settings(uow, system.services.renderer, org.id, changes)
                    system.services.keywords(resolved)  # as the API: a bad keyword is refused now
                    uow.commit()
                except admin.SettingsRefused as exc:
                    problems = exc.problems
        if problems:
            sent: dict[str, Any] = {name: form_value(request, name) for name in request.form} if request.form else {}
            for name in ("pin_required", "stop_applies_to_all_channels", "quiet_hours",
                         *(f"group_{ch.value}" for ch in Channel), *(f"quiet_{p.value}" for p in Purpose)):
                sent[name] = form_value(request, name) == "on"
            return _settings_page(request, person, org.id, values=sent, problems=problems, status=422)
        notice = "Settings saved." if changes else "Nothing changed."
        return flash(request, see_other(f"{ADMIN}/settings?org={org.id}"), notice)

    # ------------------------------------------------------------------------------ templates

    @bp.get("/admin/templates")
    @page("admin")
    async def templates_page(request: Request, person: Person) -> HTTPResponse:
        return _templates_page(request, person, _org_arg(request, person), _template_name(request))

    @bp.post("/admin/templates/preview")
    @page("admin")
    async def preview(request: Request, person: Person) -> HTTPResponse:
        """The preview alone for htmx (as the admin types), the whole page without JavaScript."""
        name, source = _template_name(request), form_value(request, "source")
        org_id = _org_arg(request, person)
        if request.headers.get("HX-Request") != "true":
            return _templates_page(request, person, org_id, name, source)
        system = system_of(request)
        with system.bus.uow(read_only=True) as uow:
            org = admin.managed_org(uow, person.org_id, org_id)
            result = admin.preview_template(uow, system.services.renderer, org.id, name, source)
        return render(request, "console/admin_template_preview.html", preview=result, problem=result.problem)

    @bp.post("/admin/templates")
    @page("admin")
    async def save_template(request: Request, person: Person) -> HTTPResponse:
        name, source = _template_name(request), form_value(request, "source")
        org_id = _org_arg(request, person)
        system = system_of(request)
        problem: str | None = None
        with system.bus.uow(read_only=True) as uow:
            org = admin.managed_org(uow, person.org_id, org_id)
        try:
            # As the API: the trial renders run before the write transaction (SQLite's write lock);
            # the check inside it then finds the template already checked.
            admin.check_templates(system.services.renderer, {name: source} if source.strip() else {})
            with system.bus.uow() as uow:
                admin.save_template(uow, system.services.renderer, org.id, name, source)
                uow.commit()
        except DomainError as exc:
            problem = str(exc)
        if problem is not None:
            return _templates_page(request, person, org.id, name, source, status=422, problem=problem)
        notice = f"Template {name} saved." if source.strip() else f"{name} uses the packaged text again."
        return flash(request, see_other(f"{ADMIN}/templates?org={org.id}&name={name}"), notice)

    # ------------------------------------------------------------------------------ people

    @bp.get("/admin/people")
    @page("admin")
    async def people(request: Request, person: Person) -> HTTPResponse:
        return _people_page(request, person)

    @bp.post("/admin/people")
    @page("admin")
    async def add_person(request: Request, person: Person) -> HTTPResponse:
        name, role, email = (form_value(request, k).strip() for k in ("name", "role", "email"))
        password = secrets.token_urlsafe(12)
        try:
            await off_the_loop(_add_person, system_of(request), person.org_id, name, role, email, password)
        except DomainError as exc:
            return _people_page(request, person, error=str(exc), status=422)
        return _people_page(request, person, new_password=(email.lower(), password))

    @bp.post("/admin/people/<agent_id:int>/role")
    @page("admin")
    async def change_role(request: Request, person: Person, agent_id: int) -> HTTPResponse:
        _not_yourself(person, agent_id, "change the role of")
        with system_of(request).bus.uow() as uow:
            row = admin.set_role(uow, person.org_id, agent_id, form_value(request, "role"))
            uow.commit()
        return flash(request, see_other(f"{ADMIN}/people"), f"{row.name} is now {row.role}.")

    @bp.post("/admin/people/<agent_id:int>/password")
    @page("admin")
    async def reset_password(request: Request, person: Person, agent_id: int) -> HTTPResponse:
        password = secrets.token_urlsafe(12)
        name = await off_the_loop(_reset_password, system_of(request), person.org_id, agent_id, password)
        return _people_page(request, person, new_password=(name, password))

    @bp.post("/admin/people/<agent_id:int>/revoke")
    @page("admin")
    async def revoke(request: Request, person: Person, agent_id: int) -> HTTPResponse:
        _not_yourself(person, agent_id, "revoke the API token of")
        system = system_of(request)
        with system.bus.uow() as uow:
            row = admin.revoke_agent(uow, person.org_id, agent_id, system.clock())
            uow.commit()
        return flash(request, see_other(f"{ADMIN}/people"), f"The API token of {row.name} is revoked.")
