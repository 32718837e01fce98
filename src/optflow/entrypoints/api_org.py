"""Messages, business events, the unassociated queue, org settings, sub-orgs and reports: /api/v1/..."""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, text
from sanic_ext.extensions.openapi import openapi

from ..domain import commands as c
from ..domain.model import InvalidInput, Mode, TransitionRefused
from ..domain.records import Agent, Org
from ..domain.reports import ConsentReport, Counts
from ..domain.settings import OrgSettings
from ..service_layer.admin import (
    TokenRefused,
    check_templates,
    check_token,
    create_sub_org,
    managed_sub_org,
    orgs_under,
    revoke_agent,
    set_agent_expiry,
    update_settings,
)
from ..service_layer.handlers import ActionResult
from ..service_layer.reports import consent_report
from ..service_layer.unit_of_work import UnitOfWork
from .api_common import (
    caller_of,
    enrollment_out,
    handle,
    id_param,
    message_out,
    path_id,
    query_bool,
    query_choice,
    query_date,
    query_param,
    query_value,
    read_body,
    respond,
    route,
    run_action,
    system_of,
)
from .errors import ApiError
from .schemas import (
    ActionOut,
    AgentListOut,
    AgentOut,
    AgentPatch,
    ChannelReport,
    ConsentReportOut,
    ConversionCounts,
    EventIn,
    EventOut,
    LinkIn,
    MessageIn,
    MethodReport,
    ModeReport,
    OrgReport,
    SendOut,
    SettingsOut,
    SettingsPatch,
    SubOrgIn,
    SubOrgListOut,
    SubOrgOut,
    UnassociatedListOut,
)

SECRET_SETTINGS = ("twilio_auth_token", "chat_secret", "unsubscribe_secret", "email_events_secret")
REDACTED = "********"
REPORT_DEFAULT_DAYS = 30
CSV_COLUMNS = ("org", "channel", "mode", "method", "opt_ins", "opt_outs", "requests", "reauthorizations",
               "requested_addresses", "converted", "conversion_rate")


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7396: objects merge key by key, null removes, anything else replaces."""
    merged = dict(target)
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, Mapping):
            current = merged.get(key)
            merged[key] = merge_patch(current if isinstance(current, Mapping) else {}, value)
        else:
            merged[key] = value
    return merged


def redacted(settings: OrgSettings) -> OrgSettings:
    return settings.model_copy(update={key: REDACTED if getattr(settings, key) else None for key in SECRET_SETTINGS})


def agent_out(row: Agent, now: datetime) -> AgentOut:
    try:
        check_token(row, now)
        active = True
    except TokenRefused:
        active = False
    return AgentOut(id=row.id, name=row.name, role=row.role, created_at=row.created_at,
                    last_used_at=row.last_used_at, expires_at=row.expires_at, revoked_at=row.revoked_at,
                    active=active)


def utc_or_422(value: datetime | None, name: str) -> datetime | None:
    """`value` in UTC (without an offset it is UTC); 422 when it cannot be one (year 9999 with a
    negative offset lies past the last date Python can hold)."""
    if value is None:
        return None
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except (OverflowError, ValueError):
        raise ApiError(422, "invalid_input", f"{name} is out of range") from None


def report_period(request: Request, today: date) -> tuple[date, date]:
    """`from` and `to` are UTC days, both included; default the last 30 days."""
    last = query_date(request, "to") or today
    first = query_date(request, "from") or last - timedelta(days=REPORT_DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidInput(f"from ({first}) is after to ({last})", code="invalid_period")
    return first, last


def _day_start(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _conversion(counts: Counts) -> dict[str, Any]:
    return {"opt_ins": counts.opt_ins, "opt_outs": counts.opt_outs, "requests": counts.requests,
            "reauthorizations": counts.reauthorizations, "requested_addresses": counts.requested_addresses,
            "converted": counts.converted, "conversion_rate": counts.conversion_rate}


def _without_mode_note(report: ConsentReport) -> str | None:
    if not report.entries_without_mode:
        return None
    return (f"{report.entries_without_mode} of the counted entries were written before the ledger kept the mode "
            "they were made under; they are counted under their channel's current mode")


def report_out(report: ConsentReport, first: date, last: date) -> ConsentReportOut:
    return ConsentReportOut(
        date_from=first.isoformat(), date_to=last.isoformat(), mode=report.mode,
        totals=ConversionCounts(**_conversion(report.totals)),
        by_channel=[ChannelReport(channel=ch, mode=report.modes[ch], **_conversion(counts))
                    for ch, counts in report.by_channel.items()],
        by_mode=[ModeReport(mode=mode, **_conversion(counts)) for mode, counts in report.by_mode.items()],
        by_method=[MethodReport(channel=m.channel, mode=m.mode, method=m.method,
                                opt_ins=m.counts.opt_ins, opt_outs=m.counts.opt_outs, requests=m.counts.requests,
                                reauthorizations=m.counts.reauthorizations) for m in report.by_method],
        by_org=[OrgReport(org_id=org.org_id, name=org.name, **_conversion(org.counts)) for org in report.by_org],
        entries_without_mode=report.entries_without_mode, note=_without_mode_note(report),
    )


def report_csv(report: ConsentReport) -> str:
    """One row per channel, mode (the one the entries were written under) and method, then the
    channel's total (mode and method `*`, with its conversion); then each org's total (with
    sub-orgs counted) and a last row for everything."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)

    def row(org: str, channel: str, mode: str, method: str, counts: Counts, conversion: bool) -> None:
        rate = counts.conversion_rate
        writer.writerow([org, channel, mode, method, counts.opt_ins, counts.opt_outs, counts.requests,
                         counts.reauthorizations,
                         counts.requested_addresses if conversion else "", counts.converted if conversion else "",
                         "" if rate is None or not conversion else rate])

    for channel, counts in report.by_channel.items():
        for m in report.by_method:
            if m.channel is channel:
                row("*", channel.value, m.mode.value, m.method or "", m.counts,
                    conversion=False)
        row("*", channel.value, "*", "*", counts, conversion=True)
    if len(report.by_org) > 1:
        for org in report.by_org:
            row(str(org.org_id), "*", "*", "*", org.counts, conversion=True)
    row("*", "*", "*", "*", report.totals, conversion=True)
    return out.getvalue()


def register(bp: Blueprint) -> None:
    # ------------------------------------------------------------------------------ messages, events

    @bp.post("/messages")
    @route("agent", body=MessageIn, ok=(202, SendOut, "Accepted: queued, deferred or held."), errors=(404, 409),
           tag="messages")
    async def send_message(request: Request) -> HTTPResponse:
        """Send a message from an employee to a contact.

        The send policy decides: refused with 409 and its reason as `error.code` (`opted_out`,
        `dnd`, `no_consent`, `marketing_declined`, `bounced`, `outside_whatsapp_window`, ...);
        `deferred` until quiet hours end or a
        frequency cap allows; in consent mode without consent yet, `held` until the customer
        replies YES, and the opt-in request goes out.
        """
        body = read_body(request, MessageIn)
        caller = caller_of(request)
        result: ActionResult = await handle(request, c.SendMessage(
            caller.org_id, body.contact_id, body.channel, body.body, caller.actor, purpose=body.purpose,
            subject=body.subject, address=body.address,
            template=c.WhatsAppTemplate(body.template.name, dict(body.template.variables)) if body.template else None))
        assert result.message_id is not None and result.channel is not None
        return respond(SendOut(message_id=result.message_id, contact_id=result.contact_id, channel=result.channel,
                               status=result.status, state=result.state, detail=result.detail), 202)

    @bp.post("/events")
    @route("agent", body=EventIn, ok=(202, EventOut, "Recorded; the enrolments it started."), errors=(404,),
           tag="events")
    async def record_event(request: Request) -> HTTPResponse:
        """Record a business event for the flows.

        For example `payment_plan.created`, `lead.created`, or `pipeline.stage_changed` with
        `data.stage`. Flows triggered by it enrol the contact and run their first steps at once.
        """
        body = read_body(request, EventIn)
        caller = caller_of(request)
        system = system_of(request)
        result: ActionResult = await handle(request, c.RecordEvent(caller.org_id, body.name, body.contact_id, body.data,
                                                               caller.actor))
        with system.bus.uow(read_only=True) as uow:
            started = [enrollment_out(uow, row) for row in
                       (uow.enrollments.get(enrollment_id) for enrollment_id in result.enrollment_ids) if row]
        return respond(EventOut(name=body.name, contact_id=body.contact_id, status=result.status,
                                detail=result.detail, enrollments=started), 202)

    # ------------------------------------------------------------------------------ unassociated queue

    @bp.get("/unassociated")
    @route("supervisor", ok=(200, UnassociatedListOut, "Waiting messages, oldest first."), tag="unassociated")
    async def unassociated(request: Request) -> HTTPResponse:
        """Messages waiting to be linked.

        Messages from addresses that belong to no contact, waiting for a supervisor to link them.
        """
        with system_of(request).bus.uow(read_only=True) as uow:
            rows = uow.messages.unassociated(caller_of(request).org_id)
        return respond(UnassociatedListOut(messages=[message_out(r) for r in rows]))

    @bp.post("/unassociated/<message_id:int>/link")
    @route("supervisor", body=LinkIn, ok=(200, ActionOut, "Linked; the opt-in request was queued."),
           errors=(404, 409), params=(id_param("message_id", "The waiting inbound message."),),
           tag="unassociated")
    async def link(request: Request, message_id: int) -> HTTPResponse:
        """Link the sender of a waiting message to a contact.

        The address joins the contact, its waiting messages join the contact's history, and an
        opt-in request goes out unless the address already opted in or out.
        """
        path_id(message_id, "message")
        body = read_body(request, LinkIn)
        caller = caller_of(request)
        return await run_action(request, c.LinkUnassociated(caller.org_id, message_id, body.contact_id, caller.actor),
                          body.contact_id)

    # ------------------------------------------------------------------------------ settings

    def settings_of(request: Request, org_id: int) -> SettingsOut:
        with system_of(request).bus.uow(read_only=True) as uow:
            row = uow.orgs.get(org_id)
            return SettingsOut(org_id=org_id, name=row.name, numbers=uow.orgs.numbers(org_id),
                               settings=redacted(uow.orgs.settings(org_id)))

    def settings_out(request: Request) -> SettingsOut:
        return settings_of(request, caller_of(request).org_id)

    def patch_settings_of(request: Request, org_id: int, patch: dict[str, Any]) -> None:
        """Apply a merge patch to the org's own settings, validated as a whole (as `PATCH /settings`)."""
        system = system_of(request)
        # Trial renders of new templates are bounded but not free: run them before the
        # transaction (SQLite's write lock); the check of the merged settings inside it then
        # finds them already checked.
        new_templates = {name: source for name, source in (patch.get("templates") or {}).items() if source}
        check_templates(system.services.renderer, new_templates)
        with system.bus.uow() as uow:
            merged = merge_patch(uow.orgs.own_settings(org_id), patch)
            resolved = update_settings(uow, system.services.renderer, org_id, merged, replace=True)
            # Keywords are compiled when the first message arrives; a bad one must be refused
            # now, not break inbound handling (and STOP) later.
            system.services.keywords(resolved)
            uow.commit()

    @bp.get("/settings")
    @route("admin", ok=(200, SettingsOut, "The org's resolved settings."), tag="settings")
    async def get_settings(request: Request) -> HTTPResponse:
        """The org's settings.

        As they apply: the org's own values, then its parent's, then the defaults. Secrets are
        never shown.
        """
        return respond(settings_out(request))

    @bp.patch("/settings")
    @route("admin", body=SettingsPatch, ok=(200, SettingsOut, "The settings after the change."), tag="settings")
    async def patch_settings(request: Request) -> HTTPResponse:
        """Change the org's settings.

        A JSON merge patch: present keys replace, objects merge key by key (one template, one
        channel's mode), null removes the org's own value.

        The result is validated as a whole before anything is stored: an invalid value is refused
        with 422 naming the field, as is group messaging on a channel in consent mode, and a
        template override that does not render.
        """
        patch = read_body(request, SettingsPatch).model_dump(mode="json", exclude_unset=True)
        patch_settings_of(request, caller_of(request).org_id, patch)
        return respond(settings_out(request))

    # ------------------------------------------------------------------------------ sub-orgs

    def sub_org_out(uow: UnitOfWork, org: Org) -> SubOrgOut:
        assert org.parent_id is not None
        return SubOrgOut(id=org.id, name=org.name, parent_id=org.parent_id, numbers=uow.orgs.numbers(org.id),
                         created_at=org.created_at)

    def sub_org_of(request: Request, org_id: int) -> int:
        """The id, if it names a sub-org of the caller's org (404 otherwise)."""
        path_id(org_id, "org")
        with system_of(request).bus.uow(read_only=True) as uow:
            return managed_sub_org(uow, caller_of(request).org_id, org_id).id

    @bp.get("/sub-orgs")
    @route("admin", ok=(200, SubOrgListOut, "The org's sub-orgs."), tag="sub-orgs")
    async def list_sub_orgs(request: Request) -> HTTPResponse:
        """The org's sub-orgs.

        Every org under the caller's (a sub-org's own sub-orgs too), oldest first, with its
        numbers.
        """
        with system_of(request).bus.uow(read_only=True) as uow:
            orgs = orgs_under(uow, caller_of(request).org_id)[1:]
            return respond(SubOrgListOut(sub_orgs=[sub_org_out(uow, org) for org in sorted(orgs, key=lambda o: o.id)]))

    @bp.post("/sub-orgs")
    @route("admin", body=SubOrgIn, ok=(201, SettingsOut, "Created; its resolved settings."), errors=(409,),
           tag="sub-orgs")
    async def create_sub_org_route(request: Request) -> HTTPResponse:
        """Create a sub-org.

        A sub-org of the caller's org, with its name, its texting numbers and its own settings
        (a JSON merge patch over what it inherits, with the rules of `PATCH /settings`: 422
        naming the field). A number that belongs to an org already is refused with 409
        `number_taken`. The caller's org's admins manage it through `/sub-orgs/{org_id}/settings`.
        """
        body = read_body(request, SubOrgIn)
        system = system_of(request)
        own = merge_patch({}, body.settings.model_dump(mode="json", exclude_unset=True) if body.settings else {})
        with system.bus.uow() as uow:
            org_id = create_sub_org(uow, system.services.renderer, caller_of(request).org_id, body.name, system.clock(),
                                    own, body.numbers)
            system.services.keywords(uow.orgs.settings(org_id))  # as PATCH /settings: refused now, not later
            uow.commit()
        return respond(settings_of(request, org_id), 201, headers={"Location": f"/api/v1/sub-orgs/{org_id}/settings"})

    @bp.get("/sub-orgs/<org_id:int>/settings")
    @route("admin", ok=(200, SettingsOut, "The sub-org's resolved settings."), errors=(404,), tag="sub-orgs",
           params=(id_param("org_id", "A sub-org of the caller's org."),))
    async def get_sub_org_settings(request: Request, org_id: int) -> HTTPResponse:
        """A sub-org's settings.

        As they apply: its own values, then its parents', then the defaults. Secrets are never
        shown. An org that is not a sub-org of the caller's is 404.
        """
        return respond(settings_of(request, sub_org_of(request, org_id)))

    @bp.patch("/sub-orgs/<org_id:int>/settings")
    @route("admin", body=SettingsPatch, ok=(200, SettingsOut, "The settings after the change."), errors=(404,),
           tag="sub-orgs", params=(id_param("org_id", "A sub-org of the caller's org."),))
    async def patch_sub_org_settings(request: Request, org_id: int) -> HTTPResponse:
        """Change a sub-org's settings.

        A JSON merge patch of the sub-org's own settings, validated as `PATCH /settings` validates
        the org's. An org that is not a sub-org of the caller's is 404.
        """
        org = sub_org_of(request, org_id)
        patch = read_body(request, SettingsPatch).model_dump(mode="json", exclude_unset=True)
        patch_settings_of(request, org, patch)
        return respond(settings_of(request, org))

    # ------------------------------------------------------------------------------ agents and tokens

    @bp.get("/agents")
    @route("admin", ok=(200, AgentListOut, "The org's agents and the state of their tokens."), tag="agents")
    async def list_agents(request: Request) -> HTTPResponse:
        """The org's agents and their API tokens.

        For each: role, when the token was created and last used (to the hour), when it expires
        and whether it was revoked. Tokens themselves are never shown again after creation.
        """
        system = system_of(request)
        now = system.clock()
        with system.bus.uow(read_only=True) as uow:
            rows = uow.agents.for_org(caller_of(request).org_id)
        return respond(AgentListOut(agents=[agent_out(row, now) for row in rows]))

    def not_own_token(request: Request, agent_id: int) -> None:
        # An admin who revoked or expired their own token would be locked out, maybe the last one.
        if agent_id == caller_of(request).agent_id:
            raise TransitionRefused("you cannot revoke or expire the token you are using; ask another admin, "
                                    "or use `optflow agents` on the server", code="own_token")

    @bp.post("/agents/<agent_id:int>/revoke")
    @route("admin", ok=(200, AgentOut, "Revoked (or already revoked)."), errors=(404, 409),
           params=(id_param("agent_id", "The agent whose token to revoke."),), tag="agents")
    async def revoke_agent_route(request: Request, agent_id: int) -> HTTPResponse:
        """Revoke an agent's API token.

        From now on the token is refused with 401 `token_revoked`. Revoking cannot be undone:
        give the person a new agent and token. Your own token cannot be revoked here (409).
        """
        path_id(agent_id, "agent")
        not_own_token(request, agent_id)
        system = system_of(request)
        now = system.clock()
        with system.bus.uow() as uow:
            row = revoke_agent(uow, caller_of(request).org_id, agent_id, now)
            uow.commit()
        return respond(agent_out(row, now))

    @bp.patch("/agents/<agent_id:int>")
    @route("admin", body=AgentPatch, ok=(200, AgentOut, "The agent after the change."), errors=(404, 409),
           params=(id_param("agent_id", "The agent whose token to change."),), tag="agents")
    async def patch_agent(request: Request, agent_id: int) -> HTTPResponse:
        """Set when an agent's API token expires.

        `expires_at`: a date-time (a past one stops the token now), or null for never. After it,
        the token is refused with 401 `token_expired`. A revoked token, and your own, cannot be
        changed here (409).
        """
        path_id(agent_id, "agent")
        not_own_token(request, agent_id)
        expires_at = utc_or_422(read_body(request, AgentPatch).expires_at, "expires_at")
        system = system_of(request)
        with system.bus.uow() as uow:
            row = set_agent_expiry(uow, caller_of(request).org_id, agent_id, expires_at)
            uow.commit()
        return respond(agent_out(row, system.clock()))

    # ------------------------------------------------------------------------------ reports

    @bp.get("/reports/consent")
    @route("supervisor", ok=(200, {"application/json": openapi.Component(ConsentReportOut), "text/csv": str},
                             "Counts as JSON, or as CSV with `format=csv`."), errors=(400, 422), tag="reports",
           params=(query_param("from", openapi.Date(), "First day (UTC), included; default 29 days before `to`."),
                   query_param("to", openapi.Date(), "Last day (UTC), included; default today."),
                   query_param("format", openapi.String(enum=["json", "csv"], default="json"), "json or csv."),
                   query_param("mode", openapi.String(enum=[m.value for m in Mode]),
                               "Count only the entries written under this mode; default every mode."),
                   query_param("include_sub_orgs", openapi.Boolean(default=True),
                               "Count the entries of the org's sub-orgs too (at every level); default true.")))
    async def consent_report_route(request: Request) -> HTTPResponse:
        """Consent report.

        Opt-ins, opt-outs, opt-in requests, re-authorisations and conversion (requests that
        became opt-ins) by channel, method, mode and org, counted from the ledger. Each entry
        counts under the mode its org ran the channel in when it was written; entries written
        before optflow kept that mode count under the channel's current mode
        (`entries_without_mode` says how many). A parent org's report includes its sub-orgs'
        entries unless `include_sub_orgs=false`.
        """
        fmt = query_value(request, "format")
        fmt = "json" if fmt is None else fmt
        if fmt not in ("json", "csv"):
            raise ApiError(422, "invalid_input", f"format must be json or csv, not {fmt!r}")
        mode = query_choice(request, "mode", Mode)
        include_sub_orgs = query_bool(request, "include_sub_orgs", default=True)
        system = system_of(request)
        org_id = caller_of(request).org_id
        first, last = report_period(request, system.clock().astimezone(UTC).date())
        since = _day_start(first)
        until = _day_start(last) + timedelta(days=1) if last < date.max else datetime.max.replace(tzinfo=UTC)
        with system.bus.uow(read_only=True) as uow:
            report = consent_report(uow, org_id, since, until, mode=mode, include_sub_orgs=include_sub_orgs)
        if fmt == "csv":
            return text(report_csv(report), content_type="text/csv; charset=utf-8", headers={
                "Content-Disposition": f'attachment; filename="consent-{first}-{last}.csv"'})
        return respond(report_out(report, first, last))
