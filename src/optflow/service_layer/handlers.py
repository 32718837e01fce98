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
from ..domain.addresses import channels_for_kind, normalize, normalize_for_channel, written_as_e164
from ..domain.keywords import Classification, KeywordTable
from ..domain.machine import TransitionContext, fire
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

    def keywords(self, settings: OrgSettings) -> KeywordTable:
        if not settings.keywords:  # most orgs: no per-message work at all
            return KeywordTable.default()
        key = json.dumps(settings.keywords, sort_keys=True)
        table = self._keyword_tables.get(key)
        if table is None:
            try:
                table = KeywordTable.default().with_additions(settings.keywords)
            except DomainError:
                # Settings are checked when saved; a bad stored entry must still never stop
                # the default keywords (STOP above all) from working.
                log.exception("org keyword additions are invalid; using the default keywords")
                table = KeywordTable.default()
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
    )


def recipient_of(contact: Contact | None) -> Recipient:
    if contact is None:
        return Recipient(dnd=DndSettings())
    return Recipient(
        dnd=contact.dnd, marketing_allowed=contact.marketing_allowed,
        time_zone=contact.time_zone, region=contact.region,
    )


def template_variables(uow: UnitOfWork, org_id: int, settings: OrgSettings, channel: Channel,
                       contact: Contact | None, actor: Actor | None, **extra: Any) -> dict[str, Any]:
    org = uow.orgs.get(org_id)
    employee = ""
    if actor is not None and actor.kind is ActorKind.AGENT and actor.id and actor.id.isdigit():
        agent = uow.agents.get(int(actor.id))
        employee = agent.name if agent else ""
    return {
        "org_name": org.name, "program_name": settings.program_name,
        "employee_name": employee or org.name, "contact_name": contact.name if contact is not None else "",
        "channel": channel.value, "help_contact": settings.help_contact,
        "message_frequency": settings.message_frequency, "stop_word": "STOP", "start_word": "START",
        "help_word": "HELP", "yes_word": "YES", **extra,
    }


# Texts of org overrides rendered before the batch took the write lock (`prerender_inbound`), by
# template, override source and variables; set by the message bus around a batch's transaction.
_PRERENDERED: ContextVar[Mapping[tuple[str, str, str], str] | None] = ContextVar("optflow_prerendered",
                                                                                 default=None)


def _render_key(name: str, override: str, variables: Mapping[str, Any]) -> tuple[str, str, str]:
    return name, override, json.dumps(variables, sort_keys=True, default=str)


@contextlib.contextmanager
def prerendered(texts: Mapping[tuple[str, str, str], str]) -> Iterator[None]:
    """Within the block, `render` takes an org override's text from `texts` when it was rendered
    already with the same variables."""
    token = _PRERENDERED.set(texts)
    try:
        yield
    finally:
        _PRERENDERED.reset(token)


def render(svc: Services, settings: OrgSettings, name: str, variables: dict[str, Any]) -> str:
    """Never raises for a known template, and is bounded; the renderer logs and counts fallbacks.
    An org's override rendered before the write lock was taken is not rendered again."""
    override = settings.templates.get(name)
    texts = _PRERENDERED.get()
    if override is not None and texts is not None:
        text = texts.get(_render_key(name, override, variables))
        if text is not None:
            return text
    return svc.renderer.render(name, variables, override).text


def prerender_inbound(uow: UnitOfWork, svc: Services, cmd: c.ReceiveInbound, now: datetime,
                      into: dict[tuple[str, str, str], str]) -> None:
    """Render, in a read-only unit of work (on SQLite: before the batch takes the write lock),
    the org overrides that answering `cmd` will use, into `into`.

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
    if not settings.templates:
        return
    address, contact = _sender(uow, org_id, cmd)
    contact_id = contact.id if contact is not None else None
    intent = classify_inbound(svc, settings, cmd.body, cmd.opt_out_type).intent
    consent = uow.consents.get(org_id, address, cmd.channel)
    actor = Actor(ActorKind.CUSTOMER, address)
    if intent is Intent.OPT_OUT:
        cause = inbound_revocation(address, cmd, cmd.provider_id)
        consents = consents_for_opt_out(uow, settings, org_id, contact_id, cause, consent, lock=False)
        outcome = rules.revoke(org_id, contact_id, consents, cause, settings, now)
        note_extra: dict[str, Any] = {"reason": _opt_out_reason(cause)}
    else:
        outcome = rules.answer(org_id, contact_id, consent, intent, settings, TransitionContext(
            actor=actor, now=now, source_message_id=cmd.provider_id, evidence=cmd.body[:500],
            allowed_methods=tuple(settings.consent_methods)))
        held = [row.body for address_, channel in outcome.release_holds
                for row in uow.messages.held(org_id, address_, channel) if row.direction is Direction.IN]
        note_extra = {"held_message": "\n".join(held)}
    wanted = [(m.template, template_variables(uow, org_id, settings, m.channel, contact,
                                             None if m.reply else actor))
              for m in outcome.to_customer if not (outcome.issue_pin and m.kind is MessageKind.PIN)]
    wanted += [(n.template, template_variables(uow, org_id, settings, n.channel, contact, None, **note_extra))
               for n in outcome.to_employee]
    for name, variables in wanted:
        override = settings.templates.get(name)
        if override is not None:
            into[_render_key(name, override, variables)] = svc.renderer.render(name, variables, override).text


def write_outcome(uow: UnitOfWork, outcome: rules.Outcome, now: datetime) -> None:
    """Write what a consent decision changed: the consents, their ledger entries, the contact's
    call flags, the outbox rows it cancels, the held messages it releases and its events. The
    messages it asks for are rendered by the caller (`send_outcome_messages`), so that the
    fallback can write the same decision without rendering anything."""
    for change in outcome.changes:
        uow.consents.save(change.consent, now)
        uow.ledger.append(change.consent.org_id or 0, change.consent.contact_id, change.record)
    contact_id = next((ch.consent.contact_id for ch in outcome.changes if ch.consent.contact_id), None)
    if outcome.call_flags and contact_id is not None:
        uow.contacts.update(contact_id, now, **outcome.call_flags)
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
           own: Consent | None = None) -> rules.Outcome:
    """Every opt-out, whichever door it came through: load, decide (`consent_rules.revoke`),
    write, and send what follows. With `render_messages=False` (the last-resort fallback) the
    same decision is written and no message is rendered or sent."""
    settings = uow.orgs.settings(org_id)
    contact_id = contact.id if contact is not None else None
    consents = consents_for_opt_out(uow, settings, org_id, contact_id, cause, own)
    outcome = rules.revoke(org_id, contact_id, consents, cause, settings, now)
    write_outcome(uow, outcome, now)
    if render_messages:
        send_outcome_messages(uow, svc, org_id, settings, contact, outcome, consents[0], now, cause.actor,
                              replies=replies, note_extra={"reason": _opt_out_reason(cause)})
    return outcome


def _opt_out_reason(cause: rules.Revocation) -> str:
    """What the employee's note says the customer wrote."""
    return f'replied "{cause.evidence.strip()[:40]}"' if cause.evidence else ""


def send_outcome_messages(uow: UnitOfWork, svc: Services, org_id: int, settings: OrgSettings,
                          contact: Contact | None, outcome: rules.Outcome, consent: Consent, now: datetime,
                          actor: Actor, *, replies: list[str] | None, customer_extra: dict[str, Any] | None = None,
                          note_extra: dict[str, Any] | None = None) -> None:
    """Render and record the messages a decision asked for: replies to the customer's own message
    go into `replies` (policy-checked), others are queued; notes go to the employee. The
    `*_extra` variables are those only the caller knows (the PIN it issued, the held message)."""
    contact_id = contact.id if contact is not None else None
    for message in outcome.to_customer:
        variables = template_variables(uow, org_id, settings, message.channel, contact,
                                       None if message.reply else actor, **(customer_extra or {}))
        body = render(svc, settings, message.template, variables)
        kind = message.kind
        if message.reply and replies is not None:
            _record_reply(uow, org_id, contact_id, consent, body, kind, now, replies, settings, contact)
            continue
        # A queued opt-out confirmation counts as sent once the provider took it (`late_replies.note_sent`).
        queue_to_customer(uow, org_id, contact_id, message.channel, message.address, body, now,
                          kind=kind, purpose=Purpose.CONVERSATIONAL)
    for note in outcome.to_employee:
        notify_employee(uow, svc, org_id, settings, contact, note.channel, note.address, note.template, now,
                        for_agent=_agent_id(actor), **(note_extra or {}))


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
    """Store a note for an employee's inbox. It is for `for_agent`, else the agent acting, else the
    person who last wrote to the customer on this channel (whose message may be the held one);
    with none of them, for every person of the org."""
    body = render(svc, settings, template, template_variables(uow, org_id, settings, channel, contact, actor, **extra))
    if for_agent is None and actor is not None:
        for_agent = _agent_id(actor)
    if for_agent is None:
        for_agent = uow.inbox.last_agent_for(org_id, address, channel)
    log.info("notified the employee about %s (%s)", mask_address(address), template)
    return uow.messages.add(
        org_id=org_id, contact_id=contact.id if contact is not None else None, direction=Direction.OUT,
        audience=Audience.EMPLOYEE, channel=channel.value, address=address, body=body,
        purpose=Purpose.CONVERSATIONAL.value, kind=MessageKind.NORMAL.value, status=MessageStatus.DELIVERED,
        created_at=now, sent_at=now, agent_id=for_agent,
    )


def policy_decision(uow: UnitOfWork, settings: OrgSettings, contact: Contact | None, consent: Consent,
                    purpose: Purpose, kind: MessageKind, now: datetime, *,
                    confirmation_sent: bool | None = None, at_hand_over: bool = False) -> Decision:
    """Frequency caps count the messages already queued or claimed too, except `at_hand_over`
    (the dispatcher's last check before the provider), which counts only those handed over."""
    recent: Sequence[datetime] = ()
    org_policy = policy_settings(settings)
    caps = [cap for cap in org_policy.caps if consent.channel in cap.channels]
    if contact is not None and caps and kind in (MessageKind.NORMAL, MessageKind.OPT_IN_REQUEST):
        # Only caps that count this channel matter, so the sends counted are on their channels.
        longest = max(cap.window for cap in caps)
        recent = uow.messages.recent_sends(consent.org_id or 0, contact.id,
                                           {ch for cap in caps for ch in cap.channels}, now - longest,
                                           planned_from=None if at_hand_over else now)
    request = SendRequest(
        channel=consent.channel, address=consent.address, purpose=purpose, now=now,
        consent_state=consent.state, kind=kind, opted_out_at=consent.opted_out_at,
        opt_out_confirmation_sent=consent.opt_out_confirmation_sent if confirmation_sent is None
        else confirmation_sent,
        recent_sends=tuple(recent),
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


def classify_inbound(svc: Services, settings: OrgSettings, body: str, opt_out_type: str | None) -> Classification:
    result = svc.keywords(settings).classify(body)
    forced = OPT_OUT_TYPES.get((opt_out_type or "").strip().upper())
    if forced is not None and forced is not result.intent:
        return Classification(intent=forced, matched=f"OptOutType={opt_out_type}", language=None)
    return result


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
    classification = classify_inbound(svc, settings, cmd.body, cmd.opt_out_type)
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

    def variables(**extra: Any) -> dict[str, Any]:
        return template_variables(uow, org_id, settings, cmd.channel, contact, None, **extra)

    def ctx(**kw: Any) -> TransitionContext:
        return TransitionContext(actor=actor, now=now, source_message_id=source,
                                 allowed_methods=tuple(settings.consent_methods), **kw)

    if intent is Intent.OPT_OUT:
        revoke(uow, svc, org_id, contact, inbound_revocation(address, cmd, source), now, replies=replies,
               own=consent)
    else:
        answered = rules.answer(org_id, contact_id, consent, intent, settings,
                                ctx(evidence=cmd.body[:500]))
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
        send_outcome_messages(uow, svc, org_id, settings, contact, answered, consent, now, actor, replies=replies,
                              customer_extra=pin, note_extra={"held_message": "\n".join(held)})
    if replies or status is not stored_status:
        uow.messages.set(message_id, status=status, reply_text=json.dumps(replies))
    if contact_id is not None and intent is Intent.OTHER:
        # Only an ordinary message is a reply: STOP, YES and HELP have their own meaning.
        uow.events.append(ev.CustomerReplied(org_id, contact_id, cmd.channel, cmd.body, now))
    return InboundResult(org_id, message_id, intent, consent.state, cmd.channel, address, tuple(replies),
                         contact_id=contact_id)


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


def inbound_revocation(address: str, cmd: c.ReceiveInbound, source: str | None) -> rules.Revocation:
    """The customer's own message asked to stop (a keyword, words, or the provider's OptOutType)."""
    return rules.Revocation(rules.Door.INBOUND, Actor(ActorKind.CUSTOMER, address), address, cmd.channel,
                            method="keyword", evidence=cmd.body[:500], source_message_id=source)


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


def create_contact(cmd: c.CreateContact, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    uow.orgs.get(cmd.org_id)
    settings = uow.orgs.settings(cmd.org_id)
    contact_id = uow.contacts.create(cmd.org_id, now, name=cmd.name, time_zone=_check_zone(cmd.time_zone),
                                     region=_check_region(cmd.region), fields=cmd.fields,
                                     marketing_allowed=cmd.marketing_allowed)
    _add_addresses(uow, cmd.org_id, contact_id, cmd.phones, cmd.emails)
    uow.events.append(ev.BusinessEvent(cmd.org_id, contact_id, "contact.created", now))
    for row in uow.contacts.addresses(contact_id):
        for channel in channels_for_kind(row.kind):
            if settings.mode(channel) is Mode.AUTO:
                consent = uow.consents.get(cmd.org_id, row.value, channel, lock=True)
                if consent.state is not State.OPTED_OUT:
                    decide_change(uow, consent, Trigger.RECORD_OPT_IN,
                                  TransitionContext(actor=SYSTEM, now=now, method="auto",
                                                    evidence=f"auto opt-in for business type {settings.business_type}",
                                                    allowed_methods=("auto",)), contact_id)
    return ActionResult(contact_id, None, None, status="created")


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
    if values:
        uow.contacts.update(cmd.contact_id, now, **values)
    _add_addresses(uow, cmd.org_id, cmd.contact_id, cmd.add_phones, cmd.add_emails)
    return ActionResult(cmd.contact_id, None, None, status="updated")


# ---------------------------------------------------------------------------------------------
# agent actions


def _load(uow: UnitOfWork, cmd: c.ContactAction) -> tuple[Contact, OrgSettings, Consent]:
    contact = uow.contacts.get(cmd.org_id, cmd.contact_id)
    address = _contact_address(uow, cmd.contact_id, cmd.channel, cmd.address)
    consent = uow.consents.get(cmd.org_id, address, cmd.channel, lock=True)
    return contact, uow.orgs.settings(cmd.org_id), consent


def _agent_id(actor: Actor) -> int | None:
    return int(actor.id) if actor.kind is ActorKind.AGENT and actor.id and actor.id.isdigit() else None


def _refuse_if_denied(decision: Decision) -> None:
    if isinstance(decision, Deny):
        raise TransitionRefused(decision.reason, code=decision.code)


def _queue_request(uow: UnitOfWork, svc: Services, cmd: c.ContactAction, contact: Contact,
                   settings: OrgSettings, consent: Consent, decision: Decision, template: str, now: datetime) -> int:
    """Queue an opt-in or re-authorisation request, at the moment the policy allows it."""
    body = render(svc, settings, template, template_variables(uow, cmd.org_id, settings, cmd.channel, contact,
                                                              cmd.actor))
    return queue_to_customer(uow, cmd.org_id, cmd.contact_id, cmd.channel, consent.address, body, now,
                             kind=MessageKind.OPT_IN_REQUEST, purpose=Purpose.CONVERSATIONAL,
                             not_before=decision.until if isinstance(decision, Defer) else None,
                             agent_id=_agent_id(cmd.actor))


def request_opt_in(cmd: c.RequestOptIn, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    contact, settings, consent = _load(uow, cmd)
    if consent.state is State.OPTED_OUT:
        # Let the machine refuse it with its reason (only the customer can reopen).
        fire(consent, Trigger.REQUEST_OPT_IN, TransitionContext(actor=cmd.actor, now=now))
    decision = policy_decision(uow, settings, contact, consent, Purpose.CONVERSATIONAL, MessageKind.OPT_IN_REQUEST, now)
    _refuse_if_denied(decision)
    if consent.state is State.OPTED_IN:
        raise TransitionRefused(f"{consent.address} is already opted in to {consent.channel.value}",
                                code="already_opted_in")
    decide_change(uow, consent, Trigger.REQUEST_OPT_IN,
                  TransitionContext(actor=cmd.actor, now=now, evidence=cmd.reason), cmd.contact_id)
    if cmd.quick:
        consent.method = "quick_opt_in"
        uow.consents.save(consent, now)
    message_id = _queue_request(uow, svc, cmd, contact, settings, consent, decision,
                                "customer/opt_in_request.employee_started", now)
    if cmd.actor.kind is ActorKind.AGENT:
        notify_employee(uow, svc, cmd.org_id, settings, contact, cmd.channel, consent.address,
                        "employee/opt_in_request_sent", now, cmd.actor)
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="requested", message_id=message_id)


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
    variables = template_variables(uow, cmd.org_id, settings, cmd.channel, contact, cmd.actor)
    queue_to_customer(uow, cmd.org_id, cmd.contact_id, cmd.channel, consent.address,
                      render(svc, settings, "customer/opt_in_confirmation", variables), now,
                      kind=MessageKind.OPT_IN_CONFIRMATION, purpose=Purpose.CONVERSATIONAL)
    held = release_held(uow, cmd.org_id, confirmed, now)
    notify_employee(uow, svc, cmd.org_id, settings, contact, cmd.channel, consent.address,
                    "employee/contact_opted_in", now, cmd.actor, held_message="\n".join(held))
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="opted_in")


def reauthorize(cmd: c.Reauthorize, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    _, settings, consent = _load(uow, cmd)
    decide_change(uow, consent, Trigger.REAUTHORIZE, TransitionContext(
        actor=cmd.actor, now=now, occurred_at=cmd.occurred_at, method=cmd.method, evidence=cmd.evidence,
        allowed_methods=tuple(settings.consent_methods)), cmd.contact_id)
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="reauthorized")


def send_reauth_request(cmd: c.SendReauthRequest, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    contact, settings, consent = _load(uow, cmd)
    if consent.state not in (State.OPTED_IN, State.REAUTH_DUE):
        raise TransitionRefused(
            f"re-authorisation needs an existing consent; {consent.address} is {consent.state.value} "
            f"on {consent.channel.value}", code="invalid_transition")
    decision = policy_decision(uow, settings, contact, consent, Purpose.CONVERSATIONAL, MessageKind.OPT_IN_REQUEST, now)
    _refuse_if_denied(decision)
    message_id = _queue_request(uow, svc, cmd, contact, settings, consent, decision, "customer/reauth_request", now)
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="reauth_requested", message_id=message_id)


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


def set_marketing(cmd: c.SetMarketing, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    contact = uow.contacts.get(cmd.org_id, cmd.contact_id)
    uow.contacts.update(cmd.contact_id, now, marketing_allowed=cmd.allowed)
    _ledger_contact_change(uow, cmd.org_id, cmd.contact_id, cmd.actor, now, channel="all",
                           from_state="marketing:" + ("on" if contact.marketing_allowed else "off"),
                           to_state="marketing:" + ("on" if cmd.allowed else "off"),
                           trigger="marketing_on" if cmd.allowed else "marketing_off")
    uow.events.append(ev.MarketingChanged(cmd.org_id, cmd.contact_id, cmd.allowed, now))
    return ActionResult(cmd.contact_id, None, None, status="marketing_on" if cmd.allowed else "marketing_off")


def send_message(cmd: c.SendMessage, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    if not cmd.body.strip():
        raise InvalidInput("the message body is empty", code="empty_body")
    contact = uow.contacts.get(cmd.org_id, cmd.contact_id)
    settings = uow.orgs.settings(cmd.org_id)
    address = _contact_address(uow, cmd.contact_id, cmd.channel, cmd.address)
    consent = uow.consents.get(cmd.org_id, address, cmd.channel, lock=True)
    decision = policy_decision(uow, settings, contact, consent, cmd.purpose, MessageKind.NORMAL, now)
    mode = settings.mode(cmd.channel)
    agent_id = _agent_id(cmd.actor)
    if isinstance(decision, Deny) and decision.code in ("no_consent", "reauth_due") \
            and mode is Mode.CONSENT and cmd.purpose is Purpose.CONVERSATIONAL:
        message_id = uow.messages.add(
            org_id=cmd.org_id, contact_id=cmd.contact_id, direction=Direction.OUT, audience=Audience.CUSTOMER,
            channel=cmd.channel.value, address=address, body=cmd.body, subject=cmd.subject,
            purpose=cmd.purpose.value, kind=MessageKind.NORMAL.value, status=MessageStatus.HELD, created_at=now,
            agent_id=agent_id,
        )
        if consent.state is not State.REQUESTED:
            request_opt_in(c.RequestOptIn(cmd.org_id, cmd.contact_id, cmd.channel, cmd.actor, address,
                                          reason="first message"), uow, svc, now)
        return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="held", message_id=message_id,
                            detail="held until the customer replies YES; the opt-in request was sent")
    _refuse_if_denied(decision)
    body = cmd.body
    if mode is Mode.DISCLAIMER and not uow.messages.has_outbound(cmd.org_id, address, cmd.channel):
        notice = render(svc, settings, "customer/disclaimer",
                        template_variables(uow, cmd.org_id, settings, cmd.channel, contact, cmd.actor))
        body = f"{body}\n\n{notice}"
    message_id = queue_to_customer(uow, cmd.org_id, cmd.contact_id, cmd.channel, address, body, now,
                                   kind=MessageKind.NORMAL, purpose=cmd.purpose,
                                   not_before=decision.until if isinstance(decision, Defer) else None,
                                   agent_id=agent_id, subject=cmd.subject)
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
    if consent.state in (State.OPTED_IN, State.OPTED_OUT):
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
