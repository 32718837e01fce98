"""Contacts and the agent's actions on them: /api/v1/contacts/..."""

from __future__ import annotations

from typing import TypeVar
from urllib.parse import unquote

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext.extensions.openapi import openapi

from ..bootstrap import System
from ..domain import commands as c
from ..domain.addresses import normalize_email, normalize_phone
from ..domain.model import Channel, DomainError, InvalidInput, NotFound
from ..domain.records import ENDED, RUNNING
from ..domain.text import storable
from .api_common import (
    caller_of,
    contact_out,
    enrollment_out,
    handle,
    id_param,
    message_out,
    path_id,
    query_int,
    query_param,
    query_value,
    read_body,
    respond,
    route,
    run_action,
    system_of,
)
from .api_org import utc_or_422
from .auth import Caller
from .schemas import (
    ActionOut,
    ApiModel,
    ChannelIn,
    ContactIn,
    ContactListOut,
    ContactOut,
    ContactPatch,
    ContactUpsertIn,
    DndIn,
    EnrollIn,
    EnrollmentListOut,
    EnrollmentOut,
    LedgerEntryOut,
    LedgerOut,
    ManualOptInIn,
    MarketingIn,
    MessageListOut,
    OptInRequestIn,
    OptOutIn,
    PinIn,
    ResetIn,
)

TAG = "contacts"
ACTIONS_TAG = "consent actions"
CONTACT = id_param("contact_id", "The contact's id.")
EXTERNAL_ID = openapi.definitions.Parameter(
    "external_id", openapi.String(minLength=1, maxLength=200), "path", required=True,
    description="The contact's key in your CRM (URL-encoded; printable text, at most 200 characters).")


def _external_id(raw: str) -> str:
    """A CRM's key as given in the path (percent-decoded: `%2F` is a slash), or a 422: printable
    text of 1 to 200 characters without surrounding spaces."""
    try:
        value = unquote(raw, errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput("external_id is not UTF-8 once percent-decoded", code="invalid_external_id") from None
    if not 1 <= len(value) <= 200 or not value.isprintable() or value != value.strip():
        raise InvalidInput("external_id must be 1 to 200 printable characters without surrounding spaces",
                           code="invalid_external_id")
    return value
ENROLLMENT = id_param("enrollment_id", "The enrolment's id.")

Body = TypeVar("Body", bound=ApiModel)


def _caller_and_body(request: Request, contact_id: int, model: type[Body]) -> tuple[Caller, Body]:
    """Who asks, and the validated body of a change to one contact (an id no row can have is a
    404 before the body is looked at)."""
    path_id(contact_id, "contact")
    body = read_body(request, model)
    return caller_of(request), body


async def _manual_consent(request: Request, contact_id: int,
                    command: type[c.RecordOptIn] | type[c.Reauthorize]) -> HTTPResponse:
    """Record a consent, or its renewal, that the customer gave outside optflow (see `ManualOptInIn`)."""
    caller, body = _caller_and_body(request, contact_id, ManualOptInIn)
    return await run_action(request, command(caller.org_id, contact_id, body.channel, caller.actor, body.address,
                                       method=body.method, occurred_at=body.occurred_at, evidence=body.evidence),
                      contact_id)


def _enrollment_response(system: System, enrollment_id: int, status: int = 200) -> HTTPResponse:
    with system.bus.uow(read_only=True) as uow:
        row = uow.enrollments.get(enrollment_id)
        assert row is not None
        return respond(enrollment_out(uow, row), status)


def _flow_error(exc: DomainError) -> DomainError:
    """The flow engine raises plain `DomainError`s; give them the status their meaning has (a
    flow or enrolment that does not exist is a 404, like an unknown contact)."""
    if exc.code == "enrollment_not_found":
        return NotFound(str(exc), code=exc.code)
    return exc


def register(bp: Blueprint) -> None:
    # ------------------------------------------------------------------------------ contacts

    @bp.post("/contacts")
    @route("agent", body=ContactIn, ok=(201, ContactOut, "The new contact."), errors=(409,), tag=TAG)
    async def create_contact(request: Request) -> HTTPResponse:
        """Create a contact.

        Phone numbers are stored in E.164 and emails in one form; an address that belongs to
        another contact is refused (409). In a channel the org runs in `auto` mode the contact is
        opted in at once (method `auto`).
        """
        body = read_body(request, ContactIn)
        caller = caller_of(request)
        system = system_of(request)
        result = await handle(request, c.CreateContact(
            caller.org_id, name=body.name, phones=tuple(body.phones), emails=tuple(body.emails),
            time_zone=body.time_zone, region=body.region, fields=body.fields,
            marketing_allowed=body.marketing_allowed, language=body.language))
        with system.bus.uow(read_only=True) as uow:
            contact = contact_out(uow, caller.org_id, result.contact_id)
        return respond(contact, 201, {"Location": f"{bp.url_prefix}/contacts/{contact.id}"})

    @bp.put("/contacts/by-external-id/<external_id:str>")
    @openapi.response(201, {"application/json": openapi.Component(ContactOut)}, "The contact, created.")
    @route("agent", body=ContactUpsertIn, ok=(200, ContactOut, "The contact after the change."),
           errors=(409, 422), params=(EXTERNAL_ID,), tag=TAG)
    async def upsert_contact(request: Request, external_id: str) -> HTTPResponse:
        """Create or update the contact your CRM knows by `external_id` (a CRM sync).

        Creates it (201) when no contact has that external id, or adopts the contact that owns
        the addresses given if it has no external id yet; otherwise updates it (200). A key left
        out changes nothing, `null` clears the name, time zone or region; addresses are only
        added. The same body sent twice changes nothing and records nothing. A marketing
        permission given or declined is a ledger entry whose actor is the caller (an
        `integration` token shows as `integration`).
        """
        key = _external_id(external_id)
        body = read_body(request, ContactUpsertIn)
        given = body.model_fields_set
        caller = caller_of(request)
        result = await handle(request, c.UpsertContact(
            caller.org_id, key, caller.actor,
            name=storable(body.name or "") if "name" in given else None,
            phones=tuple(body.phones), emails=tuple(body.emails),
            time_zone=(body.time_zone or "") if "time_zone" in given else None,
            region=(body.region or "") if "region" in given else None,
            fields=(body.fields or {}) if "fields" in given else None,
            marketing_allowed=body.marketing_allowed))
        with system_of(request).bus.uow(read_only=True) as uow:
            contact = contact_out(uow, caller.org_id, result.contact_id)
        return respond(contact, 201 if result.created else 200,
                       {"Location": f"{bp.url_prefix}/contacts/{contact.id}"} if result.created else None)

    @bp.get("/contacts")
    @route("agent", ok=(200, ContactListOut, "Matching contacts, oldest first."), errors=(400, 422), tag=TAG,
           params=(query_param("external_id", openapi.String(maxLength=200), "Your CRM's key of the contact."),
                   query_param("phone", openapi.String(maxLength=64), "A phone number in any common format."),
                   query_param("email", openapi.String(maxLength=320), "An email address."),
                   query_param("name", openapi.String(maxLength=200), "Part of the name (case-insensitive)."),
                   query_param("limit", openapi.Integer(minimum=1, maximum=100, default=50), "Page size."),
                   query_param("offset", openapi.Integer(minimum=0, maximum=1_000_000, default=0),
                               "Contacts to skip.")))
    async def search_contacts(request: Request) -> HTTPResponse:
        """Find contacts by phone number, email address, name or external id.

        The phone number and the email are normalised first, so `(415) 555-2671` finds
        `+14155552671`. Without criteria, lists every contact.
        """
        caller = caller_of(request)
        limit = query_int(request, "limit", 50, 1, 100)
        offset = query_int(request, "offset", 0, 0, 1_000_000)
        phone, email, name, external_id = (query_value(request, k) or None
                                           for k in ("phone", "email", "name", "external_id"))
        for key, value, longest in (("phone", phone, 64), ("email", email, 320), ("name", name, 200),
                                    ("external_id", external_id, 200)):
            if value is not None and len(value) > longest:
                raise InvalidInput(f"{key} is longer than {longest} characters", code="invalid_input")
        addresses = [a for a in (phone and normalize_phone(phone), email and normalize_email(email)) if a]
        with system_of(request).bus.uow(read_only=True) as uow:
            if len(addresses) == 2:
                by_email = {r.id for r in uow.contacts.search(caller.org_id, address=addresses[1], limit=1)}
                rows = [r for r in uow.contacts.search(caller.org_id, address=addresses[0], name=name,
                                                       external_id=external_id, limit=limit, offset=offset)
                        if r.id in by_email]
            else:
                rows = uow.contacts.search(caller.org_id, address=addresses[0] if addresses else None, name=name,
                                           external_id=external_id, limit=limit, offset=offset)
            contacts = [contact_out(uow, caller.org_id, row.id) for row in rows]
        return respond(ContactListOut(contacts=contacts, limit=limit, offset=offset))

    @bp.get("/contacts/<contact_id:int>")
    @route("agent", ok=(200, ContactOut, "The contact."), errors=(404,), params=(CONTACT,), tag=TAG)
    async def get_contact(request: Request, contact_id: int) -> HTTPResponse:
        """Get a contact.

        With its addresses, the consent state of each (address, channel), do-not-disturb and the
        active / do-not-call / marketing flags.
        """
        with system_of(request).bus.uow(read_only=True) as uow:
            return respond(contact_out(uow, caller_of(request).org_id, path_id(contact_id, "contact")))

    @bp.patch("/contacts/<contact_id:int>")
    @route("agent", body=ContactPatch, ok=(200, ContactOut, "The contact after the change."), errors=(404, 409),
           params=(CONTACT,), tag=TAG)
    async def update_contact(request: Request, contact_id: int) -> HTTPResponse:
        """Change a contact's name, time zone, region, language or fields, or add addresses.

        In a channel the org runs in `auto` mode an added address is opted in at once (method
        `auto`), as at creation.
        """
        path_id(contact_id, "contact")
        body = read_body(request, ContactPatch)
        given = body.model_fields_set
        caller = caller_of(request)
        system = system_of(request)
        # The command reads None as "unchanged": a null sent for a key means "clear it".
        await handle(request, c.UpdateContact(
            caller.org_id, contact_id,
            name=(body.name or "") if "name" in given else None,
            time_zone=(body.time_zone or "") if "time_zone" in given else None,
            region=(body.region or "") if "region" in given else None,
            fields=(body.fields or {}) if "fields" in given else None,
            language=(body.language or "") if "language" in given else None,
            add_phones=tuple(body.add_phones), add_emails=tuple(body.add_emails)))
        with system.bus.uow(read_only=True) as uow:
            return respond(contact_out(uow, caller.org_id, contact_id))

    # ------------------------------------------------------------------------------ consent actions

    action_errors = (404, 409)

    @bp.post("/contacts/<contact_id:int>/opt-in-request")
    @route("agent", body=OptInRequestIn, ok=(200, ActionOut, "The request was queued."), errors=action_errors,
           params=(CONTACT,), tag=ACTIONS_TAG)
    async def request_opt_in(request: Request, contact_id: int) -> HTTPResponse:
        """Send an opt-in request ("reply YES to get messages from us").

        Refused with 409 `opted_out` when the address opted out of the channel: only the customer
        can reopen it, by texting an opt-in keyword or writing first. `quick: true` lets the
        customer's YES opt in without a PIN where the org asks for one.
        """
        caller, body = _caller_and_body(request, contact_id, OptInRequestIn)
        return await run_action(request, c.RequestOptIn(caller.org_id, contact_id, body.channel, caller.actor,
                                                  body.address, quick=body.quick), contact_id)

    @bp.post("/contacts/<contact_id:int>/quick-opt-in")
    @route("agent", body=ChannelIn, ok=(200, ActionOut, "The request was queued."), errors=action_errors,
           params=(CONTACT,), tag=ACTIONS_TAG)
    async def quick_opt_in(request: Request, contact_id: int) -> HTTPResponse:
        """Quick opt-in: an opt-in request whose YES opts in at once, without a PIN step."""
        caller, body = _caller_and_body(request, contact_id, ChannelIn)
        return await run_action(request, c.RequestOptIn(caller.org_id, contact_id, body.channel, caller.actor,
                                                  body.address, quick=True), contact_id)

    @bp.post("/contacts/<contact_id:int>/opt-ins")
    @route("agent", body=ManualOptInIn, ok=(200, ActionOut, "Recorded."), errors=action_errors,
           params=(CONTACT,), tag=ACTIONS_TAG)
    async def record_opt_in(request: Request, contact_id: int) -> HTTPResponse:
        """Record an opt-in obtained elsewhere (a call, a paper or web form).

        `method` must be one of the org's consent methods; `occurred_at` is when the customer
        consented (it may be in the past, never in the future), and the ledger keeps it beside the
        moment it was recorded.
        """
        return await _manual_consent(request, contact_id, c.RecordOptIn)

    @bp.post("/contacts/<contact_id:int>/pin-confirmation")
    @route("agent", body=PinIn, ok=(200, ActionOut, "The PIN matched; the contact is opted in."),
           errors=action_errors, params=(CONTACT,), tag=ACTIONS_TAG)
    async def confirm_pin(request: Request, contact_id: int) -> HTTPResponse:
        """Confirm the PIN the customer read out (orgs with `pin_required`).

        A wrong code is refused (409 `pin_wrong`) and counts against the attempts; when they are
        used up, or the code expired, the customer must reply YES again for a new one.
        """
        caller, body = _caller_and_body(request, contact_id, PinIn)
        command = c.ConfirmPin(caller.org_id, contact_id, body.channel, caller.actor, body.address, pin=body.pin)
        return await run_action(request, command, contact_id)

    @bp.post("/contacts/<contact_id:int>/reauthorization")
    @route("agent", body=ManualOptInIn, ok=(200, ActionOut, "Re-authorised; the consent clock restarted."),
           errors=action_errors, params=(CONTACT,), tag=ACTIONS_TAG)
    async def reauthorize(request: Request, contact_id: int) -> HTTPResponse:
        """Record that the customer confirmed an existing consent again (restarts its clock)."""
        return await _manual_consent(request, contact_id, c.Reauthorize)

    @bp.post("/contacts/<contact_id:int>/reauth-request")
    @route("agent", body=ChannelIn, ok=(200, ActionOut, "The re-authorisation request was queued."),
           errors=action_errors, params=(CONTACT,), tag=ACTIONS_TAG)
    async def reauth_request(request: Request, contact_id: int) -> HTTPResponse:
        """"Text Reauth": ask the customer to confirm an ageing consent; their YES re-authorises."""
        caller, body = _caller_and_body(request, contact_id, ChannelIn)
        return await run_action(request, c.SendReauthRequest(caller.org_id, contact_id, body.channel, caller.actor,
                                                       body.address), contact_id)

    @bp.post("/contacts/<contact_id:int>/opt-out")
    @route("agent", body=OptOutIn, ok=(200, ActionOut, "Opted out."), errors=(404,), params=(CONTACT,),
           tag=ACTIONS_TAG)
    async def opt_out(request: Request, contact_id: int) -> HTTPResponse:
        """Opt the contact out of one channel, or of every channel with `all_channels`.

        Never refused for a business reason. Queued messages and automations on the channel stop.
        `method`, `occurred_at` and `evidence` record how and when the customer asked (a call
        yesterday: its moment, not now); the ledger keeps them beside the moment it was recorded.
        An opt-out dated more than five minutes ago gets no confirmation message.
        """
        caller, body = _caller_and_body(request, contact_id, OptOutIn)
        if body.channel is None and not body.all_channels:
            raise InvalidInput("say which channel, or set all_channels", code="channel_required")
        # The command names a channel even for all_channels; any will do then (none is singled out).
        command = c.OptOut(caller.org_id, contact_id, body.channel or Channel.TEXT, caller.actor, body.address,
                           all_channels=body.all_channels, method=(body.method or "agent").strip(),
                           occurred_at=utc_or_422(body.occurred_at, "occurred_at"), evidence=body.evidence)
        return await run_action(request, command, contact_id, hide_channel=body.channel is None)

    @bp.post("/contacts/<contact_id:int>/reset")
    @route("supervisor", body=ResetIn, ok=(200, ActionOut, "The consent is back to unknown."), errors=action_errors,
           params=(CONTACT,), tag=ACTIONS_TAG)
    async def reset(request: Request, contact_id: int) -> HTTPResponse:
        """Reset a consent to `unknown` (supervisors).

        For a number that was reassigned to someone else: the old consent, an opt-out included,
        does not carry over. Needs the reason as `evidence`; the ledger records who reset it and why.
        """
        caller, body = _caller_and_body(request, contact_id, ResetIn)
        return await run_action(request, c.ResetConsent(caller.org_id, contact_id, body.channel, caller.actor,
                                                  body.address, evidence=body.evidence), contact_id)

    @bp.post("/contacts/<contact_id:int>/do-not-contact-lift")
    @route("supervisor", body=ResetIn, ok=(200, ActionOut, "The address may get messages on the channel again."),
           errors=action_errors, params=(CONTACT,), tag=ACTIONS_TAG)
    async def lift_do_not_contact(request: Request, contact_id: int) -> HTTPResponse:
        """Take an address off do-not-contact on a channel (supervisors).

        For a mailbox that exists again or a number the carrier no longer blocks; the reason goes
        in `evidence` and the ledger. A complaint cannot be lifted (it came with the person's
        opt-out); a reset, for a reassigned address, clears both.
        """
        caller, body = _caller_and_body(request, contact_id, ResetIn)
        return await run_action(request, c.LiftDoNotContact(caller.org_id, contact_id, body.channel, caller.actor,
                                                            body.address, evidence=body.evidence), contact_id)

    @bp.put("/contacts/<contact_id:int>/dnd")
    @route("agent", body=DndIn, ok=(200, ActionOut, "Do-not-disturb changed."), errors=(404,), params=(CONTACT,),
           tag=ACTIONS_TAG)
    async def set_dnd(request: Request, contact_id: int) -> HTTPResponse:
        """Switch do-not-disturb on or off, on some channels or on all of them.

        DND blocks every outbound message on the channel whatever the consent, and pauses the
        automations that would use it.
        """
        caller, body = _caller_and_body(request, contact_id, DndIn)
        return await run_action(request, c.SetDnd(caller.org_id, contact_id, caller.actor, on=body.on,
                                            channels=tuple(dict.fromkeys(body.channels)),
                                            all_channels=body.all_channels), contact_id)

    @bp.put("/contacts/<contact_id:int>/marketing")
    @route("agent", body=MarketingIn, ok=(200, ActionOut, "Marketing permission changed."), errors=(404,),
           params=(CONTACT,), tag=ACTIONS_TAG)
    async def set_marketing(request: Request, contact_id: int) -> HTTPResponse:
        """Allow or forbid marketing messages to the contact (conversations are not affected)."""
        caller, body = _caller_and_body(request, contact_id, MarketingIn)
        return await run_action(request, c.SetMarketing(caller.org_id, contact_id, caller.actor, allowed=body.allowed),
                          contact_id)

    # ------------------------------------------------------------------------------ history

    @bp.get("/contacts/<contact_id:int>/ledger")
    @route("agent", ok=(200, LedgerOut, "Ledger entries, oldest first."), errors=(404,), params=(CONTACT,),
           tag=TAG)
    async def ledger(request: Request, contact_id: int) -> HTTPResponse:
        """The contact's consent ledger.

        Every change: who made it, how, when it happened and when it was recorded. Includes the
        entries of its addresses from before they were linked to the contact.
        """
        caller = caller_of(request)
        with system_of(request).bus.uow(read_only=True) as uow:
            uow.contacts.get(caller.org_id, path_id(contact_id, "contact"))
            addresses = [a.value for a in uow.contacts.addresses(contact_id)]
            rows = uow.ledger.for_contact(caller.org_id, contact_id, addresses)
        return respond(LedgerOut(entries=[LedgerEntryOut(
            seq=r["seq"], channel=r["channel"], address=r["address"], from_state=r["from_state"],
            to_state=r["to_state"], trigger=r["trigger"], method=r["method"], actor_kind=r["actor_kind"],
            actor_id=r["actor_id"], source_message_id=r["source_message_id"], evidence=r["evidence"],
            occurred_at=r["occurred_at"], recorded_at=r["recorded_at"], mode=r["mode"], hash=r["hash"])
            for r in rows]))

    @bp.get("/contacts/<contact_id:int>/messages")
    @route("agent", ok=(200, MessageListOut, "Messages, newest first."), errors=(400, 404, 422), tag=TAG,
           params=(CONTACT, query_param("limit", openapi.Integer(minimum=1, maximum=500, default=100),
                                        "How many.")))
    async def messages(request: Request, contact_id: int) -> HTTPResponse:
        """Messages to and from the contact, and the notes sent to employees about them."""
        caller = caller_of(request)
        limit = query_int(request, "limit", 100, 1, 500)
        with system_of(request).bus.uow(read_only=True) as uow:
            uow.contacts.get(caller.org_id, path_id(contact_id, "contact"))
            rows = uow.messages.for_contact(caller.org_id, contact_id, limit=limit)
        return respond(MessageListOut(messages=[message_out(r) for r in rows]))

    # ------------------------------------------------------------------------------ flows

    @bp.get("/contacts/<contact_id:int>/enrollments")
    @route("agent", ok=(200, EnrollmentListOut, "Enrolments, oldest first."), errors=(404,), params=(CONTACT,),
           tag=TAG)
    async def enrollments(request: Request, contact_id: int) -> HTTPResponse:
        """The contact's enrolments in flows, running and ended, with the steps each ran."""
        caller = caller_of(request)
        with system_of(request).bus.uow(read_only=True) as uow:
            uow.contacts.get(caller.org_id, path_id(contact_id, "contact"))
            rows = uow.enrollments.for_contact(contact_id, (*RUNNING, *ENDED))
            return respond(EnrollmentListOut(enrollments=[enrollment_out(uow, r) for r in rows]))

    @bp.post("/contacts/<contact_id:int>/enrollments")
    @route("agent", body=EnrollIn, ok=(201, EnrollmentOut, "Enrolled; the first steps already ran."),
           errors=(404, 409, 422), params=(CONTACT,), tag=TAG)
    async def enroll(request: Request, contact_id: int) -> HTTPResponse:
        """Enrol the contact in a flow by hand.

        The flow's first steps run at once. Refused (409) when the flow's re-enrolment rule says no.
        """
        caller, body = _caller_and_body(request, contact_id, EnrollIn)
        system = system_of(request)
        try:
            enrollment_id = await handle(request, c.EnrollContact(caller.org_id, contact_id, body.flow, caller.actor,
                                                              dict(body.data or {})))
        except DomainError as exc:
            raise _flow_error(exc) from None
        return _enrollment_response(system, enrollment_id, 201)

    @bp.delete("/contacts/<contact_id:int>/enrollments/<enrollment_id:int>")
    @route("agent", ok=(200, EnrollmentOut, "The enrolment, now cancelled."), errors=(404, 409),
           params=(CONTACT, ENROLLMENT), tag=TAG)
    async def remove_enrollment(request: Request, contact_id: int, enrollment_id: int) -> HTTPResponse:
        """Take the contact out of a flow. Refused (409) when the enrolment already ended."""
        path_id(contact_id, "contact")
        path_id(enrollment_id, "enrollment")
        caller = caller_of(request)
        system = system_of(request)
        try:
            await handle(request, c.RemoveEnrollment(caller.org_id, contact_id, enrollment_id, caller.actor))
        except DomainError as exc:
            raise _flow_error(exc) from None
        return _enrollment_response(system, enrollment_id)
