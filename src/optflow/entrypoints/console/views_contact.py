"""The contact page: one card per phone number and email address, a row per channel with its
consent (state, since when, by what method and whom), and the agent's buttons. Every button posts
a command to the bus; whether a button may be used, and why not, is asked of the consent rules
(`consent_rules.change`, tried on a copy of the consent), never decided here."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from ...domain import commands as c
from ...domain import consent_rules
from ...domain.addresses import channels_for_kind
from ...domain.delivery import Undeliverable, describe
from ...domain.languages import LANGUAGE_NAMES
from ...domain.machine import TransitionContext
from ...domain.model import Channel, Consent, DomainError, State, Trigger
from ...domain.records import Contact
from ...domain.settings import OrgSettings
from ...service_layer.handlers import ActionResult
from ...service_layer.unit_of_work import UnitOfWork
from ..api_common import handle, system_of
from .security import CONSOLE_PREFIX, ConsoleRefusal, Person, flash, form_value, page, render, see_other

CHANNEL_LABELS = {Channel.TEXT: "Texts", Channel.CALL: "Calls", Channel.EMAIL: "Email",
                  Channel.WHATSAPP: "WhatsApp", Channel.CHAT: "Chat"}
# The buttons of a channel row and the consent trigger each one would fire (asked of the rules).
# A re-authorisation request fires nothing until the customer answers; the renewal it asks for
# (REAUTHORIZE) is what the rules are asked about.
ACTION_TRIGGERS = {"opt_in": Trigger.RECORD_OPT_IN, "request": Trigger.REQUEST_OPT_IN,
                   "quick": Trigger.REQUEST_OPT_IN, "reauth": Trigger.REAUTHORIZE, "pin": Trigger.CONFIRM_PIN,
                   "reset": Trigger.RESET}
MESSAGE_ACTIONS = ("request", "quick", "reauth", "pin")  # they send the customer a text or email
# What the form stands in for when the rules are asked whether a button may be used (the rules
# check the form's own evidence again on submit).
FORM_EVIDENCE = "(evidence given in the form)"
# The ledger also records marks beside the consent (do-not-contact, suppression, DND, marketing,
# as "kind:value"); a row's since, method and by are those of its consent's last change of state.
CONSENT_STATES = frozenset(state.value for state in State)


@dataclass
class ChannelRow:
    consent: Consent
    label: str
    since: datetime | None = None
    method: str | None = None
    by: str | None = None
    dnd: bool = False
    refused: dict[str, str | None] = field(default_factory=dict)  # action -> why not (None: allowed)
    suppressed: str | None = None  # why the address is on the org's suppression list for the channel

    @property
    def do_not_contact(self) -> str | None:
        """The do-not-contact mark's reason in words (the domain's), or None without a mark."""
        reason = self.consent.do_not_contact
        if reason is None:
            return None
        try:
            return describe(Undeliverable(reason))
        except ValueError:
            return reason.replace("_", " ")

    @property
    def key(self) -> str:
        """A unique, id-safe name for the row's forms."""
        digest = hashlib.sha256(self.consent.address.encode()).hexdigest()[:8]
        return f"{self.consent.channel.value}-{digest}"

    @property
    def messages(self) -> bool:
        return self.consent.channel is not Channel.CALL


@dataclass
class AddressCard:
    kind: str
    value: str
    rows: list[ChannelRow]
    flags: dict[str, bool] = field(default_factory=dict)  # a phone's own Active and Do-Not-Call


def who(actor_kind: str | None, actor_id: str | None, names: Mapping[str, str]) -> str:
    if actor_kind == "agent":
        return names.get(str(actor_id), f"agent {actor_id}")
    if actor_kind == "customer":
        return "the customer"
    return " ".join(x for x in (actor_kind, actor_id) if x) or "–"


def agent_names(uow: UnitOfWork, org_id: int) -> dict[str, str]:
    return {str(agent.id): agent.name for agent in uow.agents.for_org(org_id)}


def why_not(org_id: int, contact_id: int, consent: Consent, trigger: Trigger, person: Person, now: datetime,
            settings: OrgSettings) -> str | None:
    """The consent rules' answer to `person` firing `trigger` now, tried on a copy: None when
    allowed, else the refusal's own words. The form supplies what the rules check on submit
    (a method, evidence, the date); here they stand in so that only who and what state speak."""
    methods = tuple(settings.consent_methods)
    ctx = TransitionContext(actor=person.actor, now=now, occurred_at=now, method=methods[0] if methods else "verbal",
                            evidence=FORM_EVIDENCE, allowed_methods=methods)
    try:
        consent_rules.change(org_id, contact_id, copy.copy(consent), trigger, ctx)
    except DomainError as exc:
        return str(exc)
    return None


def why_not_lift(consent: Consent, person: Person) -> str | None:
    """The rules' answer to `person` lifting the consent's do-not-contact mark, tried on a copy:
    None when allowed, else the refusal's own words (only supervisors; never a complaint)."""
    try:
        consent_rules.lift_do_not_contact(copy.copy(consent), person.actor, FORM_EVIDENCE)
    except DomainError as exc:
        return str(exc)
    return None


def contact_cards(uow: UnitOfWork, person: Person, contact: Contact, now: datetime) -> list[AddressCard]:
    settings = uow.orgs.settings(person.org_id)
    addresses = uow.contacts.addresses(contact.id)
    values = [a.value for a in addresses]
    stored = {(k.address, k.channel): k for k in uow.consents.for_addresses(person.org_id, values)}
    last: dict[tuple[str, str], dict[str, Any]] = {}
    for entry in uow.ledger.for_contact(person.org_id, contact.id, values):
        if entry["to_state"] in CONSENT_STATES:
            last[(entry["address"], entry["channel"])] = entry
    names = agent_names(uow, person.org_id)
    dnd = contact.dnd
    cards = []
    for address in addresses:
        channels = list(channels_for_kind(address.kind))
        channels += [k.channel for (value, _), k in stored.items()
                     if value == address.value and k.channel not in channels]
        rows = []
        for channel in channels:
            consent = stored.get((address.value, channel)) or Consent(channel=channel, address=address.value)
            row = ChannelRow(consent, CHANNEL_LABELS.get(channel, channel.value.title()),
                             dnd=dnd.all_channels or channel in dnd.channels,
                             suppressed=uow.suppressions.reason_for(person.org_id, address.value, channel))
            latest = last.get((address.value, channel.value))
            if latest is not None:
                row.since, row.method = latest["occurred_at"], latest["method"]
                row.by = who(latest["actor_kind"], latest["actor_id"], names)
            for action, trigger in ACTION_TRIGGERS.items():
                if action in MESSAGE_ACTIONS and not row.messages:
                    continue
                row.refused[action] = why_not(person.org_id, contact.id, consent, trigger, person, now, settings)
            if consent.do_not_contact is not None:
                row.refused["lift"] = why_not_lift(consent, person)
            rows.append(row)
        cards.append(AddressCard(address.kind, address.value, rows, flags=address.phone_flags()))
    return cards


def _zone(contact: Contact) -> ZoneInfo:
    try:
        return ZoneInfo(contact.time_zone) if contact.time_zone else ZoneInfo("UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def occurred_at(request: Request, zone: ZoneInfo) -> datetime | None:
    """The form's date and time (in the contact's time zone), or None for "now"."""
    day, clock = form_value(request, "date").strip(), form_value(request, "time").strip()
    if not day:
        return None
    try:
        moment = datetime.combine(date.fromisoformat(day), time.fromisoformat(clock) if clock else time(12, 0))
    except ValueError:
        raise ConsoleRefusal(422, "Invalid date",
                             f"{day} {clock} is not a date and time like 2026-11-01 14:30") from None
    return moment.replace(tzinfo=zone)


def _channel(request: Request) -> Channel:
    try:
        return Channel(form_value(request, "channel"))
    except ValueError:
        raise ConsoleRefusal(422, "Invalid channel", "say which channel (texts, calls, email ...)") from None


def _evidence(request: Request) -> str | None:
    return form_value(request, "evidence").strip()[:2000] or None


Builder = Callable[[Request, Person, int, ZoneInfo], c.Command]


def _record_opt_in(request: Request, person: Person, contact_id: int, zone: ZoneInfo) -> c.Command:
    return c.RecordOptIn(person.org_id, contact_id, _channel(request), person.actor, form_value(request, "address"),
                         method=form_value(request, "method"), occurred_at=occurred_at(request, zone),
                         evidence=_evidence(request))


def _opt_out(request: Request, person: Person, contact_id: int, zone: ZoneInfo) -> c.Command:
    everything = form_value(request, "all_channels") == "on"
    return c.OptOut(person.org_id, contact_id, Channel(form_value(request, "channel") or Channel.TEXT.value),
                    person.actor, None if everything else form_value(request, "address"), all_channels=everything,
                    method=form_value(request, "method") or "agent", evidence=_evidence(request),
                    occurred_at=occurred_at(request, zone))


def _request(quick: bool) -> Builder:
    def build(request: Request, person: Person, contact_id: int, zone: ZoneInfo) -> c.Command:
        return c.RequestOptIn(person.org_id, contact_id, _channel(request), person.actor,
                              form_value(request, "address"), quick=quick)
    return build


def _reauth(request: Request, person: Person, contact_id: int, zone: ZoneInfo) -> c.Command:
    return c.SendReauthRequest(person.org_id, contact_id, _channel(request), person.actor,
                               form_value(request, "address"))


def _pin(request: Request, person: Person, contact_id: int, zone: ZoneInfo) -> c.Command:
    return c.ConfirmPin(person.org_id, contact_id, _channel(request), person.actor, form_value(request, "address"),
                        pin=form_value(request, "pin").strip())


def _reset(request: Request, person: Person, contact_id: int, zone: ZoneInfo) -> c.Command:
    return c.ResetConsent(person.org_id, contact_id, _channel(request), person.actor, form_value(request, "address"),
                          evidence=_evidence(request))


def _lift(request: Request, person: Person, contact_id: int, zone: ZoneInfo) -> c.Command:
    return c.LiftDoNotContact(person.org_id, contact_id, _channel(request), person.actor,
                              form_value(request, "address"), evidence=_evidence(request))


def _dnd(request: Request, person: Person, contact_id: int, zone: ZoneInfo) -> c.Command:
    everything = form_value(request, "all_channels") == "on"
    return c.SetDnd(person.org_id, contact_id, person.actor, on=form_value(request, "on") == "on",
                    channels=() if everything else (_channel(request),), all_channels=everything)


def _marketing(request: Request, person: Person, contact_id: int, zone: ZoneInfo) -> c.Command:
    return c.SetMarketing(person.org_id, contact_id, person.actor, allowed=form_value(request, "allowed") == "on")


# action -> (the role it needs, how the form becomes a command). The role is the API's for the
# same action; the rules (consent_rules) may refuse more, with their reason.
ACTIONS: dict[str, tuple[str, Builder]] = {
    "opt-in": ("agent", _record_opt_in),
    "opt-out": ("agent", _opt_out),
    "opt-in-request": ("agent", _request(quick=False)),
    "quick-opt-in": ("agent", _request(quick=True)),
    "reauth-request": ("agent", _reauth),
    "pin": ("agent", _pin),
    "reset": ("supervisor", _reset),
    "do-not-contact-lift": ("supervisor", _lift),
    "dnd": ("agent", _dnd),
    "marketing": ("agent", _marketing),
}


def outcome_notice(request: Request, action: str, result: ActionResult | None) -> str:
    if action == "marketing":
        return "Marketing on." if form_value(request, "allowed") == "on" else "Marketing off."
    if action == "dnd":
        where = "all channels" if form_value(request, "all_channels") == "on" else form_value(request, "channel")
        return f"Do not disturb {'on' if form_value(request, 'on') == 'on' else 'off'} ({where})."
    if result is None:
        return "Done."
    what = {"opted_in": "Opted in", "opted_out": "Opted out", "requested": "Opt-in request sent",
            "reauth_requested": "Re-authorisation request sent", "reauthorized": "Re-authorised",
            "do_not_contact_lifted": "Do-not-contact lifted"}.get(
        result.status, result.status.replace("_", " ").capitalize())
    channel = f" ({CHANNEL_LABELS.get(result.channel, result.channel.value)})" if result.channel else ""
    return f"{what}{channel}." + (f" {result.detail}" if result.detail else "")


def register(bp: Blueprint) -> None:
    @bp.get("/contacts/<contact_id:int>")
    @page("agent")
    async def contact_page(request: Request, person: Person, contact_id: int) -> HTTPResponse:
        system = system_of(request)
        now = system.clock()
        with system.bus.uow(read_only=True) as uow:
            contact = uow.contacts.get(person.org_id, contact_id)
            cards = contact_cards(uow, person, contact, now)
            settings = uow.orgs.settings(person.org_id)
        return render(request, "console/contact.html", title=contact.name or f"Contact {contact.id}",
                      contact=contact, cards=cards, methods=list(settings.consent_methods),
                      zone=_zone(contact).key, tab="consent", language_names=LANGUAGE_NAMES)

    @bp.post("/contacts/<contact_id:int>/actions/<action:str>")
    @page("agent")
    async def contact_action(request: Request, person: Person, contact_id: int, action: str) -> HTTPResponse:
        if action not in ACTIONS:
            raise ConsoleRefusal(404, "Not found", f"no action {action!r}")
        role, build = ACTIONS[action]
        if not person.may(role):
            raise ConsoleRefusal(403, "Not allowed", f"This needs the {role} role; you are signed in as {person.role}.")
        back = see_other(f"{CONSOLE_PREFIX}/contacts/{contact_id}")
        with system_of(request).bus.uow(read_only=True) as uow:
            contact = uow.contacts.get(person.org_id, contact_id)
        try:
            result = await handle(request, build(request, person, contact_id, _zone(contact)))
        except DomainError as exc:
            return flash(request, back, f"Refused: {exc}", "error")
        return flash(request, back, outcome_notice(request, action, result))
