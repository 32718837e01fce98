"""One handler per command. Each runs inside the caller's unit of work and never commits: the
message bus commits once the handler and the events it raised are done, so a consent change,
its ledger entry, its outbox rows and the enrolments it cancels land together or not at all."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..domain import commands as c
from ..domain import consent_rules as rules
from ..domain import events as ev
from ..domain import pin as pins
from ..domain.addresses import channels_for_kind, country_of, normalize, normalize_for_channel, written_as_e164
from ..domain.keywords import Classification, KeywordTable
from ..domain.languages import (
    CHANNEL_WORDS,
    YES_WORDS,
    localised_setting,
    reply_language,
    spoken_language,
    supported_language,
)
from ..domain.machine import TransitionContext
from ..domain.model import (
    SYSTEM,
    Actor,
    ActorKind,
    Channel,
    Consent,
    DndSettings,
    DomainError,
    Intent,
    InvalidInput,
    Mode,
    NotFound,
    Purpose,
    State,
    TransitionRefused,
    Trigger,
)
from ..domain.policy import (
    ANSWERS_AN_OPTED_OUT_CONTACT_GETS,
    Allow,
    Decision,
    Defer,
    Deny,
    FrequencyCap,
    MessageKind,
    PolicySettings,
    Recipient,
    SendRequest,
    decide,
)
from ..domain.records import Audience, Contact, Direction, MessageStatus
from ..domain.redaction import mask_address
from ..domain.settings import OrgSettings
from ..domain.templates import override_for
from .ports import Renderer
from .unit_of_work import UnitOfWork

log = logging.getLogger("optflow.handlers")

OPT_OUT_TYPES = {"STOP": Intent.OPT_OUT, "START": Intent.OPT_IN, "HELP": Intent.HELP}


Subscriber = Callable[[UnitOfWork, Any, datetime], None]


@dataclass
class Services:
    """What handlers need besides the unit of work; built once in bootstrap.

    `subscribers` are the handlers of domain events (`domain/events.py`): whoever owns a unit of
    work calls `publish` before committing it, so the events a change raised are handled in the
    same transaction (the flow engine subscribes when it is built)."""

    renderer: Renderer
    pin_digits: Callable[[], str]
    pin_key: bytes = field(kw_only=True, repr=False)  # kept outside the database (adapters.secrets)
    public_url: str = "http://127.0.0.1:8000"
    # The one-click unsubscribe link of (org, address, channel), for marketing email's footer.
    unsubscribe_url: Callable[[int, str, Channel], str] | None = None
    subscribers: dict[type, list[Subscriber]] = field(default_factory=dict)
    _keyword_tables: dict[str, KeywordTable] = field(default_factory=dict)

    def subscribe(self, event_type: type, handler: Subscriber) -> None:
        self.subscribers.setdefault(event_type, []).append(handler)

    def publish(self, uow: UnitOfWork, now: datetime) -> None:
        """Hand every event raised in `uow` to its subscribers, including the events they raise."""
        while uow.events:
            event = uow.events.pop(0)
            for handler in self.subscribers.get(type(event), ()):
                handler(uow, event, now)

    def keywords(self, settings: OrgSettings, country: str | None = None) -> KeywordTable:
        """The org's keyword table for a sender of `country` (None: unknown): the default table,
        the org's additions, and its additions for that country (`keywords_by_country`).
        Compiled once per distinct content and shared."""
        regional = settings.keywords_by_country.get(country) if country is not None else None
        if not settings.keywords and not regional:  # most orgs: no per-message work at all
            return KeywordTable.default()
        key = json.dumps([settings.keywords, regional or {}], sort_keys=True)
        table = self._keyword_tables.get(key)
        if table is None:
            table = KeywordTable.default()
            for additions, what in ((settings.keywords, "org"), (regional, f"{country} country")):
                if not additions:
                    continue
                try:
                    table = table.with_additions(additions)
                except DomainError:
                    # Settings are checked when saved; a bad stored entry must still never stop
                    # the default keywords (STOP above all), nor the org's others, from working.
                    log.exception("%s keyword additions are invalid; leaving them out", what)
            self._keyword_tables[key] = table
        return table


@dataclass(frozen=True)
class InboundResult:
    org_id: int
    message_id: int
    intent: Intent
    state: State
    channel: Channel
    address: str
    replies: tuple[str, ...]
    duplicate: bool = False
    contact_id: int | None = None


@dataclass(frozen=True)
class ActionResult:
    contact_id: int
    channel: Channel | None
    state: State | None
    status: str = "ok"
    message_id: int | None = None
    detail: str | None = None
    enrollment_ids: tuple[int, ...] = ()  # enrolments a business event started


# ---------------------------------------------------------------------------------------------
# building blocks


_POLICIES: dict[int, tuple[OrgSettings, PolicySettings]] = {}


def policy_settings(settings: OrgSettings) -> PolicySettings:
    """The send policy's view of an org's settings, built once per settings object: every reply
    and every flow step asks for it. Resolved settings are shared and never changed
    (`OrgRepository` caches them by content); the memo keeps each one alive, so its id cannot
    be reused by another object while it is in there."""
    known = _POLICIES.get(id(settings))
    if known is not None and known[0] is settings:
        return known[1]
    if len(_POLICIES) >= 256:
        _POLICIES.clear()
    policy = _build_policy_settings(settings)
    _POLICIES[id(settings)] = (settings, policy)
    return policy


def _build_policy_settings(settings: OrgSettings) -> PolicySettings:
    return PolicySettings(
        modes=dict(settings.modes),
        quiet_hours=settings.quiet_hours,
        quiet_hours_purposes=frozenset(settings.quiet_hours_purposes),
        caps=tuple(
            FrequencyCap(limit=cap.limit, window=cap.window, channels=frozenset(cap.channels),
                         purposes=frozenset(cap.purposes), name=cap.name)
            for cap in settings.effective_caps()
        ),
        whatsapp_templates=frozenset(settings.whatsapp_templates),
    )


def recipient_of(contact: Contact | None) -> Recipient:
    if contact is None:
        return Recipient(dnd=DndSettings())
    return Recipient(
        dnd=contact.dnd, marketing_allowed=contact.marketing_allowed,
        time_zone=contact.time_zone, region=contact.region,
    )


def customer_language(settings: OrgSettings, contact: Contact | None, spoken: str | None = None) -> str:
    """The language a text to the customer is written in: the one they just used (`spoken`), else
    their contact's, else the org's default (domain/languages.py)."""
    return reply_language(spoken, contact.language if contact is not None else None, settings.default_language)


def template_variables(uow: UnitOfWork, org_id: int, settings: OrgSettings, channel: Channel,
                       contact: Contact | None, actor: Actor | None, *, language: str,
                       **extra: Any) -> dict[str, Any]:
    """The variables of a packaged template, with what optflow supplies itself (the channel's
    name, the opt-in word, the defaults of the text settings) in `language`."""
    org = uow.orgs.get(org_id)
    employee = ""
    if actor is not None and actor.kind is ActorKind.AGENT and actor.id and actor.id.isdigit():
        agent = uow.agents.get(int(actor.id))
        employee = agent.name if agent else ""
    return {
        "org_name": org.name, "program_name": settings.program_name,
        "employee_name": employee or org.name, "contact_name": contact.name if contact is not None else "",
        "channel": CHANNEL_WORDS[language][channel], "help_contact": localised_setting(language, settings.help_contact),
        "message_frequency": localised_setting(language, settings.message_frequency), "stop_word": "STOP",
        "start_word": "START", "help_word": "HELP", "yes_word": YES_WORDS[language], **extra,
    }


@dataclass
class Ahead:
    """What answering a batch's inbound messages needs that is worked out before the batch's
    transaction (on SQLite: before it waits for the write lock, which serialises every writer):
    the texts of org overrides, by template, override source and variables (an admin's template
    must not run while every other writer waits), and what each message's words ask for, by
    text, with the keyword table that read them (a tenth of an inbound message's time in the
    transaction). `MessageBus.prerender` fills it; the handlers use what still applies."""

    texts: dict[tuple[str, str, str], str] = field(default_factory=dict)
    # text -> (the table that read it, what it asks for, the language it is written in)
    readings: dict[str, tuple[KeywordTable, Classification, str | None]] = field(default_factory=dict)


# Set by the message bus around a batch's transaction.
_AHEAD: ContextVar[Ahead | None] = ContextVar("optflow_ahead", default=None)


def _render_key(name: str, override: str, variables: Mapping[str, Any]) -> tuple[str, str, str]:
    return name, override, json.dumps(variables, sort_keys=True, default=str)


@contextlib.contextmanager
def worked_out_ahead(ahead: Ahead) -> Iterator[None]:
    """Within the block, `render` takes an org override's text from `ahead` when it was rendered
    already with the same variables, and `classify_inbound` a message's reading when it was read
    with the same keyword table."""
    token = _AHEAD.set(ahead)
    try:
        yield
    finally:
        _AHEAD.reset(token)


def render(svc: Services, settings: OrgSettings, name: str, variables: dict[str, Any], language: str) -> str:
    """The text of `name` in `language`: the org's override for that language when it has one
    (`domain.templates.override_for`), else the packaged template. Never raises for a known
    template, and is bounded; the renderer logs and counts fallbacks. An org's override rendered
    before the write lock was taken is not rendered again."""
    override = override_for(settings.templates, name, language, settings.default_language)
    ahead = _AHEAD.get()
    if override is not None and ahead is not None:
        text = ahead.texts.get(_render_key(name, override, variables))
        if text is not None:
            return text
    return svc.renderer.render(name, variables, override, language).text


def prerender_inbound(uow: UnitOfWork, svc: Services, cmd: c.ReceiveInbound, now: datetime, into: Ahead) -> None:
    """Read `cmd`'s words and render the org overrides that answering it will use, into `into`,
    in a read-only unit of work (on SQLite: before the batch takes the write lock).

    An admin's override is code from outside: bounded as its rendering is (`TemplateRenderer`),
    it must still not run while every other writer waits. The same decision as the handler's
    (`consent_rules.revoke` / `answer`, on consents read now and then thrown away) says which
    templates and variables the answer will use; what cannot be known yet (a PIN not issued)
    is rendered in the transaction as before. Packaged templates, the operator's own files, are
    not rendered here."""
    org_id = cmd.org_id if cmd.org_id is not None else uow.orgs.find_by_number(
        normalize_for_channel(cmd.to_address, cmd.channel))
    if org_id is None:
        return
    settings = uow.orgs.settings(org_id)
    country = sender_country(settings, normalize_for_channel(cmd.from_address, cmd.channel)) \
        if settings.keywords_by_country else None
    table = svc.keywords(settings, country)
    reading = table.classify(cmd.body)
    into.readings[cmd.body] = (table, reading, spoken_language(reading.language, reading.matched, cmd.body))
    if not settings.templates:
        return
    address, contact = _sender(uow, org_id, cmd)
    contact_id = contact.id if contact is not None else None
    classification = classify_inbound(svc, settings, cmd.body, cmd.opt_out_type, country)
    intent = classification.intent
    language = customer_language(settings, contact, spoken_language(classification.language,
                                                                    classification.matched, cmd.body))
    consent = uow.consents.get(org_id, address, cmd.channel)
    actor = Actor(ActorKind.CUSTOMER, address)
    if intent is Intent.OPT_OUT:
        cause = inbound_revocation(address, cmd, cmd.provider_id, classification)
        consents = consents_for_opt_out(uow, settings, org_id, contact_id, cause, consent, lock=False)
        outcome = rules.revoke(org_id, contact_id, consents, cause, settings, now)
        note_extra: dict[str, Any] = {"reason": _opt_out_reason(cause)}
    else:
        outcome = rules.answer(org_id, contact_id, consent, intent, settings, TransitionContext(
            actor=actor, now=now, source_message_id=cmd.provider_id,
            evidence=inbound_evidence(cmd.body, classification), allowed_methods=tuple(settings.consent_methods)))
        held = [row.body for address_, channel in outcome.release_holds
                for row in uow.messages.held(org_id, address_, channel) if row.direction is Direction.IN]
        note_extra = {"held_message": "\n".join(held) or (cmd.body if outcome.hold_inbound and not held else "")}
    notes = settings.default_language
    employee = line_owner(uow, cmd)
    wanted = [(m.template, language, template_variables(uow, org_id, settings, m.channel, contact,
                                                       employee if m.reply else actor, language=language))
              for m in outcome.to_customer if not (outcome.issue_pin and m.kind is MessageKind.PIN)]
    wanted += [(n.template, notes, template_variables(uow, org_id, settings, n.channel, contact, employee,
                                                      language=notes, **note_extra))
               for n in outcome.to_employee]
    for name, in_language, variables in wanted:
        override = override_for(settings.templates, name, in_language, settings.default_language)
        if override is not None:
            into.texts[_render_key(name, override, variables)] = svc.renderer.render(name, variables, override,
                                                                                    in_language).text


def write_outcome(uow: UnitOfWork, outcome: rules.Outcome, now: datetime) -> None:
    """Write what a consent decision changed: the consents, their ledger entries, the contact's
    call flags and its phone records' flags, the outbox rows it cancels, the held messages it
    releases and its events. The messages it asks for are rendered by the caller
    (`send_outcome_messages`), so that the fallback can write the same decision without
    rendering anything."""
    for change in outcome.changes:
        uow.consents.save(change.consent, now)
        owner = change.consent.org_id or 0
        # The mode the channel runs in now, kept with the entry: reports count it under that mode
        # even after the org changes it (the settings are the handler's own, remembered by the uow).
        mode = uow.orgs.settings(owner).mode(change.record.channel) if owner else None
        uow.ledger.append(owner, change.consent.contact_id, change.record, mode)
    contact_id = next((ch.consent.contact_id for ch in outcome.changes if ch.consent.contact_id), None)
    if outcome.call_flags and contact_id is not None:
        uow.contacts.update(contact_id, now, **outcome.call_flags)
    for phone, flags in outcome.phone_flags.items():
        uow.contacts.set_phone_flags(outcome.changes[0].consent.org_id or 0, phone, active=flags.active,
                                     do_not_call=flags.do_not_call)
    for address, channel in outcome.cancel_outbound:
        org_id = outcome.changes[0].consent.org_id if outcome.changes else None
        if org_id is not None:
            cancel_outbound(uow, org_id, address, (channel,))
    uow.events.extend(outcome.events)
    if outcome.blocked is not None:
        uow.events.append(outcome.blocked)


def cancel_outbound(uow: UnitOfWork, org_id: int, address: str, channels: Iterable[Channel]) -> None:
    """Nothing queued for `address` on `channels` goes out any more (but the opt-out's own
    confirmation)."""
    for message_id in uow.messages.queued_for(org_id, address, channels):
        row = uow.messages.get(message_id)
        if row and row.kind is not MessageKind.OPT_OUT_CONFIRMATION:
            uow.messages.set(message_id, status=MessageStatus.CANCELLED, last_error="recipient opted out")


def decide_change(uow: UnitOfWork, consent: Consent, trigger: Trigger, ctx: TransitionContext,
                  contact_id: int | None) -> rules.Outcome:
    """Decide a consent change other than an opt-out with the consent rules and write it."""
    outcome = rules.change(consent.org_id or 0, contact_id if contact_id is not None else consent.contact_id,
                           consent, trigger, ctx)
    write_outcome(uow, outcome, ctx.now)
    return outcome


def consents_for_opt_out(uow: UnitOfWork, settings: OrgSettings, org_id: int, contact_id: int | None,
                         cause: rules.Revocation, own: Consent | None = None, *, lock: bool = True) -> list[Consent]:
    """The consents an opt-out decision needs, locked (unless only read, `lock=False`): its own
    (unless the caller loaded it), and, when it may cover every channel, all of the contact's (or,
    with no contact, every channel of the lone address)."""
    if own is None:
        own = uow.consents.get(org_id, cause.address, cause.channel, lock=lock)
    if not (cause.all_channels or settings.stop_applies_to_all_channels):
        return [own]
    consents = [own]
    for target in _all_targets(uow, contact_id, cause.address):
        if (target.address, target.channel) != (own.address, own.channel):
            consents.append(uow.consents.get(org_id, target.address, target.channel, lock=lock))
    return consents


def revoke(uow: UnitOfWork, svc: Services, org_id: int, contact: Contact | None, cause: rules.Revocation,
           now: datetime, *, replies: list[str] | None = None, render_messages: bool = True,
           own: Consent | None = None, language: str | None = None,
           employee: Actor | None = None) -> rules.Outcome:
    """Every opt-out, whichever door it came through: load, decide (`consent_rules.revoke`),
    write, and send what follows (to the customer in `language`, by default their contact's
    or the org's). With `render_messages=False` (the last-resort fallback) the same decision is
    written and no message is rendered or sent."""
    settings = uow.orgs.settings(org_id)
    contact_id = contact.id if contact is not None else None
    consents = consents_for_opt_out(uow, settings, org_id, contact_id, cause, own)
    outcome = rules.revoke(org_id, contact_id, consents, cause, settings, now)
    write_outcome(uow, outcome, now)
    if render_messages:
        send_outcome_messages(uow, svc, org_id, settings, contact, outcome, consents[0], now, cause.actor,
                              replies=replies, note_extra={"reason": _opt_out_reason(cause)}, language=language,
                              employee=employee)
    return outcome


def _opt_out_reason(cause: rules.Revocation) -> str:
    """What the employee's note says the customer wrote (their words, without the classifier's
    explanation that `inbound_evidence` adds for the ledger)."""
    words = cause.evidence or ""
    if cause.door is rules.Door.INBOUND and words.endswith("]"):
        words = words.rpartition(_EXPLANATION_MARK)[0] or words
    return f'replied "{words.strip()[:40]}"' if words else ""


def send_outcome_messages(uow: UnitOfWork, svc: Services, org_id: int, settings: OrgSettings,
                          contact: Contact | None, outcome: rules.Outcome, consent: Consent, now: datetime,
                          actor: Actor, *, replies: list[str] | None, customer_extra: dict[str, Any] | None = None,
                          note_extra: dict[str, Any] | None = None, not_before: datetime | None = None,
                          agent_id: int | None = None, note_actor: Actor | None = None,
                          language: str | None = None, employee: Actor | None = None) -> list[int]:
    """Render and record the messages a decision asked for: replies to the customer's own message
    go into `replies` (policy-checked), others are queued (from `not_before`, as `agent_id`'s);
    notes go to the employee (named after `note_actor`, else `employee`). The `*_extra` variables
    are those only the caller knows (the PIN it issued, the held message). The customer's texts
    are in `language` (default: `customer_language`), the notes in the org's default language.
    `employee`: whose own line the customer wrote to, if one's; replies and notes name them.
    Returns the queued messages' ids."""
    contact_id = contact.id if contact is not None else None
    language = language or customer_language(settings, contact)
    queued = []
    for message in outcome.to_customer:
        variables = template_variables(uow, org_id, settings, message.channel, contact,
                                       employee if message.reply else actor, language=language,
                                       **(customer_extra or {}))
        body = render(svc, settings, message.template, variables, language)
        kind = message.kind
        if message.reply and replies is not None:
            _record_reply(uow, org_id, contact_id, consent, body, kind, now, replies, settings, contact)
            continue
        # A queued opt-out confirmation counts as sent once the provider took it (`late_replies.note_sent`).
        queued.append(queue_to_customer(uow, org_id, contact_id, message.channel, message.address, body, now,
                                        kind=kind, purpose=Purpose.CONVERSATIONAL, not_before=not_before,
                                        agent_id=agent_id))
    for note in outcome.to_employee:
        notify_employee(uow, svc, org_id, settings, contact, note.channel, note.address, note.template, now,
                        note_actor or employee, for_agent=_agent_id(actor), **(note_extra or {}))
    return queued


def queue_to_customer(uow: UnitOfWork, org_id: int, contact_id: int | None, channel: Channel, address: str,
                      body: str, now: datetime, *, kind: MessageKind, purpose: Purpose,
                      not_before: datetime | None = None, agent_id: int | None = None,
                      subject: str | None = None, enrollment_id: int | None = None) -> int:
    return uow.messages.add(
        org_id=org_id, contact_id=contact_id, direction=Direction.OUT, audience=Audience.CUSTOMER,
        channel=channel.value, address=address, body=body, subject=subject, purpose=purpose.value, kind=kind.value,
        status=MessageStatus.QUEUED, not_before=not_before or now, created_at=now, agent_id=agent_id,
        enrollment_id=enrollment_id,
    )


def notify_employee(uow: UnitOfWork, svc: Services, org_id: int, settings: OrgSettings, contact: Contact | None,
                    channel: Channel, address: str, template: str, now: datetime, actor: Actor | None = None,
                    *, for_agent: int | None = None, **extra: Any) -> int:
    """Store a note for an employee's inbox, in the org's default language. It is for
    `for_agent`, else the agent acting, else the person who last wrote to the customer on this
    channel (whose message may be the held one); with none of them, for every person of the org."""
    language = settings.default_language
    body = render(svc, settings, template,
                  template_variables(uow, org_id, settings, channel, contact, actor, language=language, **extra),
                  language)
    if for_agent is None and actor is not None:
        for_agent = _agent_id(actor)
    if for_agent is None:
        for_agent = uow.inbox.last_agent_for(org_id, address, channel)
    if log.isEnabledFor(logging.INFO):  # masking costs more than the note's insert
        log.info("notified the employee about %s (%s)", mask_address(address), template)
    return uow.messages.add(
        org_id=org_id, contact_id=contact.id if contact is not None else None, direction=Direction.OUT,
        audience=Audience.EMPLOYEE, channel=channel.value, address=address, body=body,
        purpose=Purpose.CONVERSATIONAL.value, kind=MessageKind.NORMAL.value, status=MessageStatus.DELIVERED,
        created_at=now, sent_at=now, agent_id=for_agent,
    )


def policy_decision(uow: UnitOfWork, settings: OrgSettings, contact: Contact | None, consent: Consent,
                    purpose: Purpose, kind: MessageKind, now: datetime, *,
                    confirmation_sent: bool | None = None, at_hand_over: bool = False,
                    template: str | None = None) -> Decision:
    """Frequency caps count the messages already queued or claimed too, except `at_hand_over`
    (the dispatcher's last check before the provider), which counts only those handed over.
    `template`: the message is that WhatsApp template (None: free-form)."""
    recent: Sequence[datetime] = ()
    org_policy = policy_settings(settings)
    caps = [cap for cap in org_policy.caps if consent.channel in cap.channels]
    if contact is not None and caps and kind in (MessageKind.NORMAL, MessageKind.OPT_IN_REQUEST):
        # Only caps that count this channel matter, so the sends counted are on their channels.
        longest = max(cap.window for cap in caps)
        recent = uow.messages.recent_sends(consent.org_id or 0, contact.id,
                                           {ch for cap in caps for ch in cap.channels}, now - longest,
                                           planned_from=None if at_hand_over else now)
    suppression = None if kind in ANSWERS_AN_OPTED_OUT_CONTACT_GETS \
        else uow.suppressions.reason_for(consent.org_id or 0, consent.address, consent.channel)
    request = SendRequest(
        suppression=suppression,
        channel=consent.channel, address=consent.address, purpose=purpose, now=now,
        consent_state=consent.state, kind=kind, opted_out_at=consent.opted_out_at,
        opt_out_confirmation_sent=consent.opt_out_confirmation_sent if confirmation_sent is None
        else confirmation_sent,
        recent_sends=tuple(recent), do_not_contact=consent.do_not_contact, template=template,
        last_customer_message_at=uow.messages.last_inbound_at(consent.org_id or 0, consent.address, consent.channel)
        if consent.channel is Channel.WHATSAPP and kind in (MessageKind.NORMAL, MessageKind.OPT_IN_REQUEST) else None,
    )
    return decide(request, recipient_of(contact), org_policy)


def _contact_address(uow: UnitOfWork, contact_id: int, channel: Channel, wanted: str | None) -> str:
    rows = uow.contacts.addresses(contact_id)
    if wanted:
        value = normalize_for_channel(wanted, channel)
        if not any(r.value == value for r in rows):
            raise InvalidInput(f"{wanted!r} is not an address of contact {contact_id}", code="unknown_address")
        return value
    kind = "email" if channel is Channel.EMAIL else "phone"
    for row in rows:
        if row.kind == kind:
            return row.value
    raise InvalidInput(
        f"contact {contact_id} has no {'email address' if kind == 'email' else 'phone number'} "
        f"for the {channel.value} channel", code="no_address",
    )


def release_held(uow: UnitOfWork, org_id: int, outcome: rules.Outcome, now: datetime) -> list[str]:
    """The holds a consent decision released (an opt-in): the employee's held messages go out;
    the customer's held messages reach the employee. Returns the bodies of the customer's."""
    delivered: list[str] = []
    for address, channel in outcome.release_holds:
        for row in uow.messages.held(org_id, address, channel):
            if row.direction is Direction.OUT:
                uow.messages.set(row.id, status=MessageStatus.QUEUED, not_before=now)
            else:
                uow.messages.set(row.id, status=MessageStatus.DELIVERED)
                delivered.append(row.body)
    return delivered


# ---------------------------------------------------------------------------------------------
# inbound


def _record_reply(uow: UnitOfWork, org_id: int, contact_id: int | None, consent: Consent, body: str,
                  kind: MessageKind, now: datetime, replies: list[str], settings: OrgSettings,
                  contact: Contact | None) -> None:
    """A reply to the customer goes back in the webhook response; it is recorded as sent."""
    decision = policy_decision(uow, settings, contact, consent, Purpose.CONVERSATIONAL, kind, now,
                               confirmation_sent=False if kind is MessageKind.OPT_OUT_CONFIRMATION else None)
    status = MessageStatus.REPLIED if isinstance(decision, Allow) else MessageStatus.DENIED
    uow.messages.add(
        org_id=org_id, contact_id=contact_id, direction=Direction.OUT, audience=Audience.CUSTOMER,
        channel=consent.channel.value, address=consent.address, body=body, purpose=Purpose.CONVERSATIONAL.value,
        kind=kind.value, status=status, created_at=now, sent_at=now if status is MessageStatus.REPLIED else None,
        last_error=None if isinstance(decision, Allow) else getattr(decision, "reason", None),
    )
    if isinstance(decision, Allow):
        replies.append(body)
        if kind is MessageKind.OPT_OUT_CONFIRMATION:
            consent.opt_out_confirmation_sent = True
            uow.consents.save(consent, now)


def sender_country(settings: OrgSettings, address: str) -> str | None:
    """The country whose keywords apply to `address`; only looked up (a phone number parse, cached)
    for an org that has keywords for some country."""
    return country_of(address) if settings.keywords_by_country else None


def classify_inbound(svc: Services, settings: OrgSettings, body: str, opt_out_type: str | None,
                     country: str | None = None) -> Classification:
    """What the customer's message asks for, read with the keywords of the org and of the sender's
    `country`; Twilio's OptOutType wins over the words."""
    table = svc.keywords(settings, country)
    ahead = _AHEAD.get()
    read = ahead.readings.get(body) if ahead is not None else None
    result = read[1] if read is not None and read[0] is table else table.classify(body)
    forced = OPT_OUT_TYPES.get((opt_out_type or "").strip().upper())
    if forced is not None and forced is not result.intent:
        return Classification(intent=forced, matched=f"OptOutType={opt_out_type}", language=None,
                              rule="provider:OptOutType")
    return result


def language_spoken(classification: Classification, body: str) -> str | None:
    """The language of the customer's message `body` (`spoken_language`), as worked out ahead
    with `classification` when it was."""
    ahead = _AHEAD.get()
    read = ahead.readings.get(body) if ahead is not None else None
    if read is not None and read[1] is classification:
        return read[2]
    return spoken_language(classification.language, classification.matched, body)


def receive_inbound(cmd: c.ReceiveInbound, uow: UnitOfWork, svc: Services, now: datetime) -> InboundResult:
    org_id = cmd.org_id
    if org_id is None:
        to = normalize_for_channel(cmd.to_address, cmd.channel)
        org_id = uow.orgs.find_by_number(to)
        if org_id is None:
            raise NotFound(f"no org owns {cmd.to_address!r}", code="unknown_number")
    address, contact = _sender(uow, org_id, cmd)
    contact_id = contact.id if contact is not None else None
    settings = uow.orgs.settings(org_id)
    classification = classify_inbound(svc, settings, cmd.body, cmd.opt_out_type, sender_country(settings, address))
    intent = classification.intent
    # Stored with the status and replies most messages end with; changed below only if needed.
    status = stored_status = MessageStatus.DELIVERED if contact is not None else MessageStatus.UNASSOCIATED
    message_id = uow.messages.add_inbound(
        org_id=org_id, contact_id=contact_id, audience=Audience.CUSTOMER, channel=cmd.channel.value,
        address=address, org_address=cmd.to_address, body=cmd.body, status=status, intent=intent.value,
        provider_id=cmd.provider_id, reply_text="[]", created_at=now,
    )
    if message_id is None:
        return _replayed(uow, org_id, cmd)
    consent = uow.consents.get(org_id, address, cmd.channel, lock=True)
    actor = Actor(ActorKind.CUSTOMER, address)
    source = cmd.provider_id or f"message:{message_id}"
    replies: list[str] = []
    spoken = language_spoken(classification, cmd.body)
    language = customer_language(settings, contact, spoken)
    if contact is not None and spoken is not None and spoken != contact.language:
        uow.contacts.update(contact.id, now, language=spoken)  # learned from what they wrote

    def ctx(**kw: Any) -> TransitionContext:
        return TransitionContext(actor=actor, now=now, source_message_id=source,
                                 allowed_methods=tuple(settings.consent_methods), **kw)

    if intent is Intent.OPT_OUT:
        revoke(uow, svc, org_id, contact, inbound_revocation(address, cmd, source, classification), now,
               replies=replies, own=consent, language=language, employee=line_owner(uow, cmd))
    else:
        answered = rules.answer(org_id, contact_id, consent, intent, settings,
                                ctx(evidence=inbound_evidence(cmd.body, classification)))
        write_outcome(uow, answered, now)
        held = release_held(uow, org_id, answered, now)
        pin: dict[str, Any] = {}
        if answered.issue_pin:
            digits = svc.pin_digits()
            pins.issue(consent, digits, now, timedelta(minutes=settings.pin_ttl_minutes), svc.pin_key)
            uow.consents.save(consent, now)
            pin = {"pin": digits, "pin_valid_minutes": settings.pin_ttl_minutes}
        if answered.hold_inbound:
            status = MessageStatus.HELD
        # The employee's note quotes what was released, or says the customer's message now waits.
        waiting = cmd.body if answered.hold_inbound and not held else ""
        # Most messages ask for no text at all: only those that do look up whose line it is.
        employee = line_owner(uow, cmd) if answered.to_customer or answered.to_employee else None
        send_outcome_messages(uow, svc, org_id, settings, contact, answered, consent, now, actor, replies=replies,
                              customer_extra=pin, note_extra={"held_message": "\n".join(held) or waiting},
                              language=language, employee=employee)
    if replies or status is not stored_status:
        uow.messages.set(message_id, status=status, reply_text=json.dumps(replies))
    if contact_id is not None and intent is Intent.OTHER:
        # Only an ordinary message is a reply: STOP, YES and HELP have their own meaning.
        uow.events.append(ev.CustomerReplied(org_id, contact_id, cmd.channel, cmd.body, now))
    return InboundResult(org_id, message_id, intent, consent.state, cmd.channel, address, tuple(replies),
                         contact_id=contact_id)


def line_owner(uow: UnitOfWork, cmd: c.ReceiveInbound) -> Actor | None:
    """The employee whose own line the customer wrote to (Movius's MultiLine), as the actor whose
    name the texts use; None for the org's shared numbers (the texts then use the org's name)."""
    number = written_as_e164(cmd.to_address, cmd.channel)
    if number is None:
        try:
            number = normalize_for_channel(cmd.to_address, cmd.channel)
        except DomainError:  # a chat gateway's own address, not a number of ours
            return None
    agent_id = uow.orgs.number_owner(number)
    return Actor(ActorKind.AGENT, str(agent_id)) if agent_id is not None else None


def _replayed(uow: UnitOfWork, org_id: int, cmd: c.ReceiveInbound) -> InboundResult:
    """A provider sent a message again (its id is stored): the first outcome, changing nothing."""
    assert cmd.provider_id is not None  # messages without a provider id are never duplicates
    seen = uow.messages.find_inbound(org_id, cmd.provider_id)
    if seen is None:
        raise AssertionError(f"message {cmd.provider_id} was neither stored nor found")
    consent = uow.consents.get(org_id, seen.address, cmd.channel)
    return InboundResult(org_id, seen.id, seen.intent or Intent.OTHER, consent.state,
                         cmd.channel, seen.address, tuple(json.loads(seen.reply_text or "[]")),
                         duplicate=True, contact_id=seen.contact_id)


def _sender(uow: UnitOfWork, org_id: int, cmd: c.ReceiveInbound) -> tuple[str, Contact | None]:
    """The sender's address in normal form, and their contact if they are one. Parsing and
    validating a phone number costs ~100 µs, more than the look-up: a number that arrives
    exactly as a contact's stored (checked, E.164) number is taken as it is; any other is
    normalised, which also refuses what is not a valid address."""
    candidate = written_as_e164(cmd.from_address, cmd.channel)
    if candidate is not None:
        contact = uow.contacts.at_address(org_id, candidate)
        if contact is not None:
            return candidate, contact
    address = normalize_for_channel(cmd.from_address, cmd.channel)
    return address, None if address == candidate else uow.contacts.at_address(org_id, address)


@dataclass(frozen=True)
class _Target:
    address: str
    channel: Channel


_EXPLANATION_MARK = "\n["


def inbound_evidence(body: str, classification: Classification) -> str:
    """What the ledger keeps of an inbound message: its words, and which rule read them how."""
    return f"{body[:500]}{_EXPLANATION_MARK}{classification.explanation()}]"


def inbound_revocation(address: str, cmd: c.ReceiveInbound, source: str | None,
                       classification: Classification) -> rules.Revocation:
    """The customer's own message asked to stop (a keyword, words, or the provider's OptOutType)."""
    return rules.Revocation(rules.Door.INBOUND, Actor(ActorKind.CUSTOMER, address), address, cmd.channel,
                            method="keyword", evidence=inbound_evidence(cmd.body, classification),
                            source_message_id=source)


def _all_targets(uow: UnitOfWork, contact_id: int | None, fallback_address: str) -> list[_Target]:
    if contact_id is None:
        kind, _ = normalize(fallback_address) if "@" in fallback_address else ("phone", fallback_address)
        return [_Target(fallback_address, ch) for ch in channels_for_kind(kind)]
    targets = []
    for row in uow.contacts.addresses(contact_id):
        for channel in channels_for_kind(row.kind):
            targets.append(_Target(row.value, channel))
    return targets


# ---------------------------------------------------------------------------------------------
# contacts


def _add_addresses(uow: UnitOfWork, org_id: int, contact_id: int, phones: Iterable[str], emails: Iterable[str]) -> None:
    for kind, raw in [*(("phone", p) for p in phones), *(("email", e) for e in emails)]:
        value = normalize_for_channel(raw, Channel.TEXT if kind == "phone" else Channel.EMAIL)
        owner = uow.contacts.find_by_address(org_id, value)
        if owner is not None and owner != contact_id:
            raise TransitionRefused(f"{value} already belongs to contact {owner}", code="address_taken")
        if owner is None:
            uow.contacts.add_address(org_id, contact_id, kind, value)
            uow.consents.attach_contact(org_id, value, contact_id)
            if kind == "phone":  # an opt-out (or opt-in) the number gave before it was the contact's
                flags = rules.phone_flags_from(uow.consents.for_addresses(org_id, [value]))
                if flags is not None:
                    uow.contacts.set_phone_flags(org_id, value, active=flags.active, do_not_call=flags.do_not_call)


def create_contact(cmd: c.CreateContact, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    uow.orgs.get(cmd.org_id)
    settings = uow.orgs.settings(cmd.org_id)
    contact_id = uow.contacts.create(cmd.org_id, now, name=cmd.name, time_zone=_check_zone(cmd.time_zone),
                                     region=_check_region(cmd.region), fields=cmd.fields,
                                     marketing_allowed=cmd.marketing_allowed, external_id=cmd.external_id,
                                     language=_check_language(cmd.language))
    _add_addresses(uow, cmd.org_id, contact_id, cmd.phones, cmd.emails)
    uow.events.append(ev.BusinessEvent(cmd.org_id, contact_id, "contact.created", now))
    if not cmd.marketing_allowed:
        # "Opt in to future marketing" left unticked is the customer's answer too: on the record.
        record_marketing(uow, cmd.org_id, contact_id, cmd.actor or SYSTEM, now, None, False)
    _auto_opt_in(uow, settings, cmd.org_id, contact_id, [row.value for row in uow.contacts.addresses(contact_id)],
                 now)
    return ActionResult(contact_id, None, None, status="created")


def _auto_opt_in(uow: UnitOfWork, settings: OrgSettings, org_id: int, contact_id: int, values: Sequence[str],
                 now: datetime) -> None:
    """In a channel the org runs in `auto` mode (business types allowed to), a contact's address
    is opted in as it is stored, when the contact is created or the address added later; never
    over an opt-out, and once (an address already opted in keeps its consent)."""
    for row in uow.contacts.addresses(contact_id):
        if row.value not in values:
            continue
        for channel in channels_for_kind(row.kind):
            if settings.mode(channel) is Mode.AUTO:
                consent = uow.consents.get(org_id, row.value, channel, lock=True)
                if consent.state not in (State.OPTED_OUT, State.OPTED_IN):
                    decide_change(uow, consent, Trigger.RECORD_OPT_IN,
                                  TransitionContext(actor=SYSTEM, now=now, method="auto",
                                                    evidence=f"auto opt-in for business type {settings.business_type}",
                                                    allowed_methods=("auto",)), contact_id)


def _check_zone(zone: str | None) -> str | None:
    if not zone:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {zone!r}", code="unknown_time_zone") from None
    return zone


def _check_region(region: str | None) -> str | None:
    if not region:
        return None
    code = region.strip().upper()
    if len(code) != 2 or not code.isalpha():
        raise InvalidInput(f"region must be a two-letter US state code, not {region!r}", code="invalid_region")
    return code


def _check_language(language: str | None) -> str | None:
    if not language:
        return None
    code = supported_language(language)
    if code is None:
        raise InvalidInput(f"language must be one of en, es, fr, pt (ISO 639-1), not {language!r}",
                           code="invalid_language")
    return code


def update_contact(cmd: c.UpdateContact, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    uow.contacts.get(cmd.org_id, cmd.contact_id)
    values: dict[str, Any] = {}
    if cmd.name is not None:
        values["name"] = cmd.name
    if cmd.time_zone is not None:
        values["time_zone"] = _check_zone(cmd.time_zone)
    if cmd.region is not None:
        values["region"] = _check_region(cmd.region)
    if cmd.fields is not None:
        values["fields"] = cmd.fields
    if cmd.language is not None:
        values["language"] = _check_language(cmd.language)
    if values:
        uow.contacts.update(cmd.contact_id, now, **values)
    known = {row.value for row in uow.contacts.addresses(cmd.contact_id)}
    _add_addresses(uow, cmd.org_id, cmd.contact_id, cmd.add_phones, cmd.add_emails)
    added = [row.value for row in uow.contacts.addresses(cmd.contact_id) if row.value not in known]
    if added:
        _auto_opt_in(uow, uow.orgs.settings(cmd.org_id), cmd.org_id, cmd.contact_id, added, now)
    return ActionResult(cmd.contact_id, None, None, status="updated")


# ---------------------------------------------------------------------------------------------
# agent actions


def _load(uow: UnitOfWork, cmd: c.ContactAction) -> tuple[Contact, OrgSettings, Consent]:
    contact = uow.contacts.get(cmd.org_id, cmd.contact_id)
    address = _contact_address(uow, cmd.contact_id, cmd.channel, cmd.address)
    consent = uow.consents.get(cmd.org_id, address, cmd.channel, lock=True)
    return contact, uow.orgs.settings(cmd.org_id), consent


def _agent_id(actor: Actor) -> int | None:
    return int(actor.id) if actor.for_business and actor.id and actor.id.isdigit() else None


def _refuse_if_denied(decision: Decision) -> None:
    if isinstance(decision, Deny):
        raise TransitionRefused(decision.reason, code=decision.code)


def request_opt_in(cmd: c.RequestOptIn, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    contact, settings, consent = _load(uow, cmd)
    ctx = TransitionContext(actor=cmd.actor, now=now, evidence=cmd.reason)
    rules.check_request(consent, ctx)  # before the policy: an opt-out's refusal says who may reopen it
    decision = policy_decision(uow, settings, contact, consent, Purpose.CONVERSATIONAL, MessageKind.OPT_IN_REQUEST, now)
    _refuse_if_denied(decision)
    rules.check_request_interval(consent, settings, now)
    requested = decide_change(uow, consent, Trigger.REQUEST_OPT_IN, ctx, cmd.contact_id)
    rules.mark_request(consent, rules.request_path(cmd.reason, cmd.quick))
    uow.consents.save(consent, now)
    queued = send_outcome_messages(uow, svc, cmd.org_id, settings, contact, requested, consent, now, cmd.actor,
                                   replies=None, not_before=_deferred_until(decision),
                                   agent_id=_agent_id(cmd.actor), note_actor=cmd.actor,
                                   note_extra={"held_message": cmd.held_message})
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="requested", message_id=queued[0])


def _deferred_until(decision: Decision) -> datetime | None:
    return decision.until if isinstance(decision, Defer) else None


def record_opt_in(cmd: c.RecordOptIn, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    _, settings, consent = _load(uow, cmd)
    recorded = decide_change(uow, consent, Trigger.RECORD_OPT_IN, TransitionContext(
        actor=cmd.actor, now=now, occurred_at=cmd.occurred_at, method=cmd.method, evidence=cmd.evidence,
        allowed_methods=tuple(settings.consent_methods)), cmd.contact_id)
    release_held(uow, cmd.org_id, recorded, now)
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="opted_in")


def confirm_pin(cmd: c.ConfirmPin, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    contact, settings, consent = _load(uow, cmd)
    try:
        pins.check(consent, cmd.pin, now, settings.pin_max_attempts, svc.pin_key)
    except pins.PinRejected:
        uow.consents.save(consent, now)  # the failed attempt counts even though the action fails
        uow.commit_on_error = True
        raise
    confirmed = decide_change(uow, consent, Trigger.CONFIRM_PIN, TransitionContext(
        actor=cmd.actor, now=now, method="pin", evidence="PIN read out by the customer"), cmd.contact_id)
    held = release_held(uow, cmd.org_id, confirmed, now)
    send_outcome_messages(uow, svc, cmd.org_id, settings, contact, confirmed, consent, now, cmd.actor, replies=None,
                          note_extra={"held_message": "\n".join(held)}, note_actor=cmd.actor)
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="opted_in")


def reauthorize(cmd: c.Reauthorize, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    _, settings, consent = _load(uow, cmd)
    renewed = decide_change(uow, consent, Trigger.REAUTHORIZE, TransitionContext(
        actor=cmd.actor, now=now, occurred_at=cmd.occurred_at, method=cmd.method, evidence=cmd.evidence,
        allowed_methods=tuple(settings.consent_methods)), cmd.contact_id)
    release_held(uow, cmd.org_id, renewed, now)
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="reauthorized")


def send_reauth_request(cmd: c.SendReauthRequest, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    contact, settings, consent = _load(uow, cmd)
    request = rules.reauthorization_request(consent)
    decision = policy_decision(uow, settings, contact, consent, Purpose.CONVERSATIONAL, MessageKind.OPT_IN_REQUEST, now)
    _refuse_if_denied(decision)
    queued = send_outcome_messages(uow, svc, cmd.org_id, settings, contact, request, consent, now, cmd.actor,
                                   replies=None, not_before=_deferred_until(decision), agent_id=_agent_id(cmd.actor))
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="reauth_requested", message_id=queued[0])


def opt_out(cmd: c.OptOut, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    """An agent's (or a flow's) opt-out of one channel or of everything. Never fails for a
    business reason: only an unknown contact or address stops it."""
    contact = uow.contacts.get(cmd.org_id, cmd.contact_id)
    if cmd.all_channels:
        targets = _all_targets(uow, cmd.contact_id, "")
        if not targets:
            raise InvalidInput(f"contact {cmd.contact_id} has no address to opt out", code="no_address")
        own = next((t for t in targets if t.channel is cmd.channel), targets[0])
        address, channel = own.address, own.channel
    else:
        address, channel = _contact_address(uow, cmd.contact_id, cmd.channel, cmd.address), cmd.channel
    door = rules.Door.FLOW if cmd.actor.id and cmd.actor.id.startswith("flow:") else rules.Door.AGENT
    outcome = revoke(uow, svc, cmd.org_id, contact, rules.Revocation(
        door, cmd.actor, address, channel, method=cmd.method, all_channels=cmd.all_channels,
        evidence=cmd.evidence, occurred_at=cmd.occurred_at), now)
    return ActionResult(cmd.contact_id, cmd.channel, outcome.state_of(address, cmd.channel) or State.OPTED_OUT,
                        status="opted_out")


def opt_out_address(cmd: c.OptOutAddress, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult | None:
    """Opt one address out whether or not a contact owns it (one-click unsubscribe, the
    carrier's "unsubscribed recipient", an imported suppression). Repeating it records nothing
    more. Returns None when no contact owns the address."""
    contact = uow.contacts.at_address(cmd.org_id, cmd.address)
    if contact is not None and rules.unsubscribe_ends_marketing_only(cmd.channel, cmd.marketing_only, True):
        if contact.marketing_allowed:
            set_marketing(c.SetMarketing(cmd.org_id, contact.id, cmd.actor, allowed=False), uow, svc, now)
        consent = uow.consents.get(cmd.org_id, cmd.address, cmd.channel)
        return ActionResult(contact.id, cmd.channel, consent.state, status="marketing_off")
    revoke(uow, svc, cmd.org_id, contact, rules.Revocation(
        cmd.door, cmd.actor, cmd.address, cmd.channel, method=cmd.method, evidence=cmd.evidence,
        source_message_id=cmd.source_message_id), now)
    if contact is None:
        return None
    return ActionResult(contact.id, cmd.channel, State.OPTED_OUT, status="opted_out")


def reset_consent(cmd: c.ResetConsent, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    _, _, consent = _load(uow, cmd)
    decide_change(uow, consent, Trigger.RESET, TransitionContext(
        actor=cmd.actor, now=now, method="number_reassigned", evidence=cmd.evidence), cmd.contact_id)
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="reset")


def set_dnd(cmd: c.SetDnd, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    contact = uow.contacts.get(cmd.org_id, cmd.contact_id)
    if not cmd.all_channels and not cmd.channels:
        raise InvalidInput("say which channels, or all_channels", code="channels_required")
    current = contact.dnd
    if cmd.all_channels:
        new = DndSettings(all_channels=cmd.on, channels=frozenset() if not cmd.on else current.channels)
        if not cmd.on:
            new = DndSettings(all_channels=False, channels=frozenset())
    else:
        channels = set(current.channels)
        channels = channels | set(cmd.channels) if cmd.on else channels - set(cmd.channels)
        new = DndSettings(all_channels=current.all_channels, channels=frozenset(channels))
    uow.contacts.set_dnd(cmd.contact_id, now, new)
    label = "all" if cmd.all_channels else ",".join(sorted(ch.value for ch in cmd.channels))
    _ledger_contact_change(uow, cmd.org_id, cmd.contact_id, cmd.actor, now, channel=label,
                           from_state=_dnd_label(current), to_state=_dnd_label(new),
                           trigger="dnd_on" if cmd.on else "dnd_off")
    if cmd.on:
        blocked = set(Channel) if cmd.all_channels else set(cmd.channels)
        for row in uow.contacts.addresses(cmd.contact_id):
            cancel_outbound(uow, cmd.org_id, row.value, blocked)
        uow.events.append(ev.ChannelsBlocked(cmd.org_id, cmd.contact_id,
                                             None if cmd.all_channels else frozenset(blocked),
                                             "do not disturb", now, pause=True))
    else:
        uow.events.append(ev.ChannelsUnblocked(cmd.org_id, cmd.contact_id, now))
    uow.events.append(ev.DndChanged(cmd.org_id, cmd.contact_id, _dnd_label(current), _dnd_label(new), now))
    return ActionResult(cmd.contact_id, None, None, status="dnd_on" if cmd.on else "dnd_off")


def _ledger_contact_change(uow: UnitOfWork, org_id: int, contact_id: int, actor: Actor, now: datetime, *,
                           channel: str, from_state: str, to_state: str, trigger: str) -> None:
    """A contact-level change that is not a consent transition (DND, marketing permission)."""
    uow.ledger.append_change(
        org_id, contact_id, channel=channel, address="", from_state=from_state, to_state=to_state,
        trigger=trigger, method=actor.kind.value, actor_kind=actor.kind.value, actor_id=actor.id,
        source_message_id=None, evidence=None, occurred_at=now, recorded_at=now,
    )


def _dnd_label(dnd: DndSettings) -> str:
    if dnd.all_channels:
        return "dnd:all"
    return "dnd:" + ",".join(sorted(ch.value for ch in dnd.channels)) if dnd.channels else "dnd:none"


def record_marketing(uow: UnitOfWork, org_id: int, contact_id: int, actor: Actor, now: datetime,
                     before: bool | None, allowed: bool) -> None:
    """The ledger entry and the event of a marketing permission given or declined (`before`
    None: the contact is new, with no permission before)."""
    was = "unset" if before is None else "on" if before else "off"
    _ledger_contact_change(uow, org_id, contact_id, actor, now, channel="all", from_state=f"marketing:{was}",
                           to_state="marketing:" + ("on" if allowed else "off"),
                           trigger="marketing_on" if allowed else "marketing_off")
    uow.events.append(ev.MarketingChanged(org_id, contact_id, allowed, now))


def set_marketing(cmd: c.SetMarketing, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    contact = uow.contacts.get(cmd.org_id, cmd.contact_id)
    uow.contacts.update(cmd.contact_id, now, marketing_allowed=cmd.allowed)
    record_marketing(uow, cmd.org_id, cmd.contact_id, cmd.actor, now, contact.marketing_allowed, cmd.allowed)
    return ActionResult(cmd.contact_id, None, None, status="marketing_on" if cmd.allowed else "marketing_off")


def _template_json(cmd: c.SendMessage, settings: OrgSettings) -> str | None:
    """A WhatsApp template message as stored on its row (None: free-form); the policy refuses a
    name the org has not registered as approved."""
    if cmd.template is None:
        return None
    if cmd.channel is not Channel.WHATSAPP:
        raise InvalidInput("templates are for WhatsApp messages only", code="template_not_whatsapp")
    return json.dumps({"name": cmd.template.name, "variables": cmd.template.variables,
                       "content_sid": settings.whatsapp_templates.get(cmd.template.name)})


def send_message(cmd: c.SendMessage, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    if not cmd.body.strip() and cmd.template is None:
        raise InvalidInput("the message body is empty", code="empty_body")
    contact = uow.contacts.get(cmd.org_id, cmd.contact_id)
    settings = uow.orgs.settings(cmd.org_id)
    address = _contact_address(uow, cmd.contact_id, cmd.channel, cmd.address)
    consent = uow.consents.get(cmd.org_id, address, cmd.channel, lock=True)
    template_json = _template_json(cmd, settings)
    decision = policy_decision(uow, settings, contact, consent, cmd.purpose, MessageKind.NORMAL, now,
                               template=cmd.template.name if cmd.template else None)
    mode = settings.mode(cmd.channel)
    agent_id = _agent_id(cmd.actor)
    if isinstance(decision, Deny) and decision.code in ("no_consent", "reauth_due") \
            and mode is Mode.CONSENT and cmd.purpose is Purpose.CONVERSATIONAL:
        already_holding = any(row.direction is Direction.OUT for row in uow.messages.held(cmd.org_id, address,
                                                                                          cmd.channel))
        message_id = uow.messages.add(
            org_id=cmd.org_id, contact_id=cmd.contact_id, direction=Direction.OUT, audience=Audience.CUSTOMER,
            channel=cmd.channel.value, address=address, body=cmd.body, subject=cmd.subject,
            purpose=cmd.purpose.value, kind=MessageKind.NORMAL.value, status=MessageStatus.HELD, created_at=now,
            agent_id=agent_id, template_json=template_json,
        )
        request = rules.request_for_held_message(consent.state, already_holding)
        if request is rules.HeldMessageRequest.REAUTH:
            send_reauth_request(c.SendReauthRequest(cmd.org_id, cmd.contact_id, cmd.channel, cmd.actor, address),
                                uow, svc, now)
        elif request is rules.HeldMessageRequest.OPT_IN:
            request_opt_in(c.RequestOptIn(cmd.org_id, cmd.contact_id, cmd.channel, cmd.actor, address,
                                          reason="first message", held_message=cmd.body), uow, svc, now)
        asked = {rules.HeldMessageRequest.REAUTH: "; the re-authorisation request was sent",
                 rules.HeldMessageRequest.OPT_IN: "; the opt-in request was sent"}.get(request, "")
        waits_for = "renews their consent (YES, or your record of it)" if consent.state is State.REAUTH_DUE \
            else "replies YES"
        return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="held", message_id=message_id,
                            detail=f"held until the customer {waits_for}{asked}")
    _refuse_if_denied(decision)
    body = cmd.body or (f"[WhatsApp template {cmd.template.name}] {json.dumps(cmd.template.variables)}"
                        if cmd.template else "")
    if mode is Mode.DISCLAIMER and not uow.messages.has_outbound(cmd.org_id, address, cmd.channel):
        language = customer_language(settings, contact)
        notice = render(svc, settings, "customer/disclaimer",
                        template_variables(uow, cmd.org_id, settings, cmd.channel, contact, cmd.actor,
                                           language=language), language)
        body = f"{body}\n\n{notice}"
    if cmd.channel is Channel.EMAIL and cmd.purpose is Purpose.MARKETING and svc.unsubscribe_url is not None:
        # The same footer as a flow's marketing mail; the dispatcher adds the List-Unsubscribe headers.
        language = customer_language(settings, contact)
        footer = render(svc, settings, "email/marketing_footer", template_variables(
            uow, cmd.org_id, settings, cmd.channel, contact, cmd.actor, language=language,
            unsubscribe_url=svc.unsubscribe_url(cmd.org_id, address, cmd.channel)), language)
        body = f"{body}\n\n{footer}"
    message_id = queue_to_customer(uow, cmd.org_id, cmd.contact_id, cmd.channel, address, body, now,
                                   kind=MessageKind.NORMAL, purpose=cmd.purpose,
                                   not_before=decision.until if isinstance(decision, Defer) else None,
                                   agent_id=agent_id, subject=cmd.subject)
    if template_json is not None:
        uow.messages.set(message_id, template_json=template_json)
    return ActionResult(cmd.contact_id, cmd.channel, consent.state,
                        status="deferred" if isinstance(decision, Defer) else "queued", message_id=message_id,
                        detail=decision.reason if isinstance(decision, Defer) else None)


def link_unassociated(cmd: c.LinkUnassociated, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    message = uow.messages.get(cmd.message_id)
    if message is None or message.org_id != cmd.org_id or message.direction is not Direction.IN:
        raise NotFound(f"no inbound message with id {cmd.message_id}", code="message_not_found")
    if message.status is not MessageStatus.UNASSOCIATED:
        raise TransitionRefused(f"message {cmd.message_id} is not waiting in the unassociated queue",
                                code="not_unassociated")
    uow.contacts.get(cmd.org_id, cmd.contact_id)
    channel = message.channel
    address = message.address
    kind = "email" if channel is Channel.EMAIL else "phone"
    _add_addresses(uow, cmd.org_id, cmd.contact_id, [address] if kind == "phone" else [],
                   [address] if kind == "email" else [])
    for row in uow.messages.unassociated(cmd.org_id):
        if row.address == address:
            uow.messages.set(row.id, status=MessageStatus.DELIVERED, contact_id=cmd.contact_id)
    consent = uow.consents.get(cmd.org_id, address, channel)
    settings = uow.orgs.settings(cmd.org_id)
    if consent.state in (State.OPTED_IN, State.OPTED_OUT) or not rules.may_request_again(consent, settings, now):
        return ActionResult(cmd.contact_id, channel, consent.state, status="linked")
    result = request_opt_in(c.RequestOptIn(cmd.org_id, cmd.contact_id, channel, cmd.actor, address,
                                           reason="supervisor_link"), uow, svc, now)
    return ActionResult(cmd.contact_id, channel, result.state, status="linked", message_id=result.message_id)


HANDLERS: dict[type, Callable[..., Any]] = {
    c.ReceiveInbound: receive_inbound,
    c.CreateContact: create_contact,
    c.UpdateContact: update_contact,
    c.RequestOptIn: request_opt_in,
    c.RecordOptIn: record_opt_in,
    c.ConfirmPin: confirm_pin,
    c.Reauthorize: reauthorize,
    c.SendReauthRequest: send_reauth_request,
    c.OptOut: opt_out,
    c.OptOutAddress: opt_out_address,
    c.ResetConsent: reset_consent,
    c.SetDnd: set_dnd,
    c.SetMarketing: set_marketing,
    c.SendMessage: send_message,
    c.LinkUnassociated: link_unassociated,
}
