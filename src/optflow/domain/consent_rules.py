"""The consent rules: one pure decision for every consent change, whichever door it came through.

The service layer loads the contact's consents on every channel, hands them here with the org's
settings, the cause and `now`, and writes back what comes out (`Outcome`): the consents as they
are now, their ledger records, the outbound messages to cancel, the channels whose enrolments
stop, the contact's call flags, the confirmation to send, the employee's note and the domain
events. Nothing here does IO or reads the clock, so the webhook, the agent's button, the CLI, the
one-click unsubscribe, the carrier's "unsubscribed recipient", a flow step and the last-resort
fallback cannot drift apart: they are the same function.

The rules (docs/consent-machine.md has them as a table):

- An opt-out, through any door, covers its own channel, and every channel of the contact when
  the org says STOP means everything or the cause says all. Each covered consent not yet opted out
  is recorded; the customer's own channel is recorded again for a repeated STOP (new evidence).
  It never fails for a business reason.
- The one confirmation of an opt-out goes to a customer who wrote STOP, or for an agent's opt-out
  on a channel we were messaging them on; never for a flow's, the carrier's or the unsubscribe
  link's (the link was itself the confirmation); never twice; never on calls.
- Only the customer reopens their own opt-out (an opt-in keyword, writing first). A person may
  record a consent over it only as a supervisor, with evidence, for a consent given after the
  opt-out. A reset (number reassigned) is a supervisor's, with a reason.
- An opt-in request by a person or a flow never goes over an opt-out.

The transition table itself (which trigger goes from which state to which) is
`machine.TRANSITIONS`; this module decides which triggers to fire, on what, and what follows.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from .delivery import Undeliverable
from .events import ChannelsBlocked, ConsentChanged, Event
from .machine import TransitionContext, fire
from .model import (
    Actor,
    ActorKind,
    Channel,
    Consent,
    Intent,
    InvalidInput,
    Mode,
    State,
    TransitionRecord,
    TransitionRefused,
    Trigger,
)
from .policy import MessageKind
from .settings import OrgSettings

# Channels on which an opt-out is confirmed with a message (a call has no message to send).
CONFIRMED_CHANNELS = frozenset({Channel.TEXT, Channel.WHATSAPP, Channel.CHAT, Channel.EMAIL})
# States from which a person's opt-out is confirmed when the customer did not write it themselves:
# we were messaging them on that channel, so they hear that it stopped.
_WERE_MESSAGING = frozenset({State.REQUESTED, State.OPTED_IN, State.REAUTH_DUE})

SUPERVISOR_ROLES = frozenset({"supervisor", "admin"})


class Door(enum.StrEnum):
    """Where an opt-out came from. Each door is one way in; the rules are the same for all."""

    INBOUND = "inbound"  # the customer's message (a keyword, a request in words, OptOutType)
    AGENT = "agent"  # an employee, through the API, the console or the CLI
    ONE_CLICK = "one_click"  # the unsubscribe link or RFC 8058 one-click POST
    CARRIER = "carrier"  # the provider says the recipient unsubscribed (Twilio 21610)
    FLOW = "flow"  # a flow's `opt_out` step
    COMPLAINT = "complaint"  # the recipient reported our email as spam (a mail provider or an ARF report)
    BOUNCE = "bounce"  # a mail server or provider says the address bounced (marks it, never an opt-out)


@dataclass(frozen=True)
class AddressSignal:
    """A provider says an address cannot, or must not, get messages on a channel: a bounce, a
    complaint, a carrier's 30004/30005/30006 (`delivery.Undeliverable`). Not an opt-out by itself."""

    door: Door
    actor: Actor
    address: str
    channel: Channel
    reason: Undeliverable
    evidence: str | None = None
    source_message_id: str | None = None


@dataclass(frozen=True)
class Marked:
    """A consent put on do-not-contact, and what it was before (None: nothing against it)."""

    consent: Consent
    previous: str | None
    signal: AddressSignal


def mark_undeliverable(consent: Consent, signal: AddressSignal, now: datetime) -> Marked | None:
    """Put the (address, channel) of `consent` on do-not-contact with the signal's reason; the
    consent's state stays (nobody opted out). None when it already carries that reason. A
    complaint outranks a bounce: once complained, a later bounce does not replace the reason."""
    previous = consent.do_not_contact
    if previous == signal.reason or (previous == Undeliverable.COMPLAINED and signal.reason is Undeliverable.BOUNCED):
        return None
    consent.do_not_contact = signal.reason.value
    consent.do_not_contact_at = now
    return Marked(consent, previous, signal)


def lift_do_not_contact(consent: Consent, actor: Actor, evidence: str | None) -> str:
    """A supervisor takes the (address, channel) off do-not-contact (the mailbox exists again,
    the carrier lifted its block), with the reason on record. A complaint stays: it came with the
    person's opt-out, which only they can reopen (a reset, for a reassigned number, clears both).
    Returns the reason that was lifted."""
    previous = consent.do_not_contact
    where = f"{consent.address} on {consent.channel.value}"
    if previous is None:
        raise TransitionRefused(f"{where} is not on do-not-contact", code="not_on_do_not_contact")
    if not _is_supervisor(actor):
        raise TransitionRefused("only a supervisor can take an address off do-not-contact", code="forbidden")
    if previous == Undeliverable.COMPLAINED:
        raise TransitionRefused(f"{where} complained about our messages; only a reset (number or address "
                                "reassigned) clears that", code="complained")
    if not (evidence and evidence.strip()):
        raise InvalidInput("say why the address can take messages again (evidence)", code="reason_required")
    consent.do_not_contact = None
    consent.do_not_contact_at = None
    return previous


@dataclass(frozen=True)
class Revocation:
    """An opt-out: who, through which door, on which (address, channel), with what proof."""

    door: Door
    actor: Actor
    address: str
    channel: Channel
    method: str
    all_channels: bool = False  # the cause itself says "everything" (agent's or flow's choice)
    evidence: str | None = None
    occurred_at: datetime | None = None
    source_message_id: str | None = None


@dataclass(frozen=True)
class CustomerMessage:
    """A message to the customer that follows from the change. `reply`: it goes back as the
    answer to the customer's own message (TwiML); otherwise it is queued in the outbox."""

    template: str
    channel: Channel
    address: str
    kind: MessageKind
    reply: bool


@dataclass(frozen=True)
class EmployeeNote:
    template: str
    channel: Channel
    address: str


@dataclass(frozen=True)
class Change:
    """One consent as it is after a fired trigger, and the record of what the trigger did."""

    consent: Consent
    record: TransitionRecord


@dataclass
class Outcome:
    """Everything a consent change causes, as data for the service layer to write."""

    changes: list[Change] = field(default_factory=list)
    cancel_outbound: list[tuple[str, Channel]] = field(default_factory=list)
    blocked: ChannelsBlocked | None = None
    call_flags: dict[str, bool] = field(default_factory=dict)  # contact's active / do_not_call
    release_holds: list[tuple[str, Channel]] = field(default_factory=list)
    to_customer: list[CustomerMessage] = field(default_factory=list)
    to_employee: list[EmployeeNote] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    issue_pin: bool = False  # the customer said YES and the org asks for a PIN: one is issued and sent
    hold_inbound: bool = False  # the customer's message waits for their consent before the employee sees it

    def state_of(self, address: str, channel: Channel) -> State | None:
        for change in reversed(self.changes):
            if change.consent.address == address and change.consent.channel is channel:
                return change.consent.state
        return None


def _follow_on(outcome: Outcome, org_id: int, contact_id: int | None, change: Change) -> None:
    """What any consent change brings with it: the call flags and the event."""
    record = change.record
    if contact_id is None:
        return
    if record.channel is Channel.CALL and record.to_state in (State.OPTED_IN, State.OPTED_OUT):
        opted_in = record.to_state is State.OPTED_IN
        outcome.call_flags = {"active": opted_in, "do_not_call": not opted_in}
    if record.from_state != record.to_state:
        outcome.events.append(ConsentChanged(org_id, contact_id, record.channel, record.address,
                                             record.from_state, record.to_state, record.recorded_at))


def _apply(outcome: Outcome, consent: Consent, trigger: Trigger, ctx: TransitionContext, org_id: int,
           contact_id: int | None) -> Change:
    record = fire(consent, trigger, ctx)
    if record.to_state is not State.OPTED_OUT:
        consent.opt_out_confirmation_sent = False
    if contact_id is not None and consent.contact_id is None:
        consent.contact_id = contact_id
    change = Change(consent, record)
    outcome.changes.append(change)
    _follow_on(outcome, org_id, contact_id, change)
    return change


# ------------------------------------------------------------------------------------- opt-out


def opt_out_scope(consents: Sequence[Consent], cause: Revocation, settings: OrgSettings) -> list[Consent]:
    """The consents an opt-out covers: its own (address, channel) first, then, when the org says
    STOP means every channel or the cause says all, every other consent of the contact."""
    own = next((c for c in consents if c.address == cause.address and c.channel is cause.channel), None)
    if own is None:
        raise ValueError(f"the consents given do not include {cause.channel.value} of the opt-out's address")
    scope = [own]
    if cause.all_channels or settings.stop_applies_to_all_channels:
        scope += [c for c in consents if c is not own]
    return scope


def confirms_opt_out(cause: Revocation, previous: State, already_sent: bool) -> bool:
    """The one confirmation of an opt-out goes when a person asked for it (the customer, or an
    agent for them) on a channel that can carry it. A customer who wrote STOP always hears back
    once; an agent's opt-out is confirmed only on a channel we were messaging them on. A flow,
    the carrier and the unsubscribe link (which was itself the confirmation) send none."""
    if already_sent or cause.channel not in CONFIRMED_CHANNELS:
        return False
    if cause.door is Door.INBOUND:
        return True
    return cause.door is Door.AGENT and cause.actor.kind is not ActorKind.SYSTEM and previous in _WERE_MESSAGING


def revoke(org_id: int, contact_id: int | None, consents: Sequence[Consent], cause: Revocation,
           settings: OrgSettings, now: datetime) -> Outcome:
    """Decide an opt-out. `consents` holds every consent of the contact (or of the lone address
    when no contact owns it), loaded for update; they are changed in place and returned in the
    outcome. Never refuses for a business reason."""
    outcome = Outcome()
    scope = opt_out_scope(consents, cause, settings)
    own = scope[0]
    previous = State(own.state)
    confirmation_sent = own.opt_out_confirmation_sent
    ctx = TransitionContext(actor=cause.actor, now=now, occurred_at=cause.occurred_at, method=cause.method,
                            evidence=cause.evidence, source_message_id=cause.source_message_id)
    for consent in scope:
        # A customer's repeated STOP is recorded again (it is new evidence); anything else that
        # is already opted out stays as it is.
        repeat_is_news = consent is own and cause.door is Door.INBOUND
        if consent.state is State.OPTED_OUT and not repeat_is_news:
            continue
        _apply(outcome, consent, Trigger.OPT_OUT, ctx, org_id, contact_id)
    own.opt_out_confirmation_sent = confirmation_sent
    channels = frozenset(c.channel for c in scope)
    outcome.cancel_outbound = [(c.address, c.channel) for c in scope]
    if contact_id is not None:
        everything = cause.all_channels
        outcome.blocked = ChannelsBlocked(
            org_id, contact_id, None if everything else channels,
            "opted out of every channel" if everything
            else "opted out of " + ", ".join(sorted(ch.value for ch in channels)), now)
    if confirms_opt_out(cause, previous, confirmation_sent):
        outcome.to_customer.append(CustomerMessage("customer/opt_out_confirmation", own.channel, own.address,
                                                   MessageKind.OPT_OUT_CONFIRMATION, reply=cause.door is Door.INBOUND))
    if cause.door is Door.INBOUND and contact_id is not None:
        outcome.to_employee.append(EmployeeNote("employee/contact_opted_out", own.channel, own.address))
    return outcome


# ------------------------------------------------------------------------------ other changes


def _is_supervisor(actor: Actor) -> bool:
    return actor.kind is ActorKind.AGENT and actor.role in SUPERVISOR_ROLES


def check_manual_opt_in(consent: Consent, ctx: TransitionContext) -> None:
    """A person records a consent the customer gave outside optflow (a form, a call). Over the
    customer's own opt-out only a supervisor may, with evidence, for a consent given after it:
    an agent cannot reopen an opt-out, and nobody can with a consent older than the opt-out."""
    if consent.state is not State.OPTED_OUT or ctx.actor.kind is not ActorKind.AGENT:
        return
    who = f"{consent.address} opted out of {consent.channel.value}"
    if not _is_supervisor(ctx.actor):
        raise TransitionRefused(f"{who}; only the customer can reopen it, or a supervisor recording a "
                                "consent the customer gave after the opt-out", code="opted_out")
    if not (ctx.evidence and ctx.evidence.strip()):
        raise InvalidInput(f"{who}; recording a new consent over it needs evidence of that consent",
                           code="evidence_required")
    opted_out_at = consent.opted_out_at
    if ctx.occurred_at is None or (opted_out_at is not None and ctx.occurred_at <= opted_out_at):
        when = opted_out_at.isoformat() if opted_out_at else "the opt-out"
        raise TransitionRefused(f"{who} at {when}; a consent recorded over it must have been given after "
                                "that moment (occurred_at)", code="consent_before_opt_out")


def check_reset(ctx: TransitionContext) -> None:
    """A reset forgets a consent, an opt-out included, because the number now belongs to someone
    else: a supervisor's decision, with the reason on record."""
    if ctx.actor.kind is ActorKind.AGENT and not _is_supervisor(ctx.actor):
        raise TransitionRefused("only a supervisor can reset a consent (number reassigned)", code="forbidden")
    if not (ctx.evidence and ctx.evidence.strip()):
        raise InvalidInput("a reset needs a reason (for example: number reassigned to a new person)",
                           code="reason_required")


def change(org_id: int, contact_id: int | None, consent: Consent, trigger: Trigger,
           ctx: TransitionContext) -> Outcome:
    """Decide any change but an opt-out (which has `revoke`): fire `trigger` on `consent` under
    the rules above, and say what follows. Raises a `DomainError` saying why not."""
    if trigger is Trigger.OPT_OUT:
        raise ValueError("opt-outs are decided by revoke()")
    if trigger is Trigger.RECORD_OPT_IN:
        check_manual_opt_in(consent, ctx)
    if trigger is Trigger.RESET:
        check_reset(ctx)
    outcome = Outcome()
    done = _apply(outcome, consent, trigger, ctx, org_id, contact_id)
    if trigger is Trigger.RESET:
        # The address belongs to someone else now: what it said about the old owner is gone too.
        consent.do_not_contact = None
        consent.do_not_contact_at = None
    if done.record.to_state is State.OPTED_IN and done.record.from_state is not State.OPTED_IN:
        outcome.release_holds.append((consent.address, consent.channel))
    return outcome


def answer(org_id: int, contact_id: int | None, consent: Consent, intent: Intent, settings: OrgSettings,
           ctx: TransitionContext) -> Outcome:
    """Decide the answer to a customer's own message that is not a STOP (`revoke` has those),
    on the channel it came in on. `ctx` carries the customer as actor, the message as evidence.

    - YES (or START, or any opt-in word): renews a consent that is given or due; otherwise it
      is the consent itself, which reopens the customer's own opt-out, unless the org asks for a
      PIN first (not after a "quick opt-in" request). The customer hears back; the employee learns
      of it, and what was held for the consent is released.
    - HELP: the help text, whatever the state.
    - anything else, from a contact: in consent mode without a consent, or after an opt-out, the
      message waits for the consent and the customer is asked for it (which reopens an opt-out,
      as the customer wrote first)."""
    outcome = Outcome()

    def reply(template: str, kind: MessageKind) -> None:
        outcome.to_customer.append(CustomerMessage(template, consent.channel, consent.address, kind, reply=True))

    if intent is Intent.HELP:
        reply("customer/help", MessageKind.HELP_REPLY)
    elif intent is Intent.OPT_IN and consent.state in (State.OPTED_IN, State.REAUTH_DUE):
        _apply(outcome, consent, Trigger.REAUTHORIZE, replace(ctx, method="keyword"), org_id, contact_id)
        reply("customer/opt_in_confirmation", MessageKind.OPT_IN_CONFIRMATION)
    elif intent is Intent.OPT_IN:
        pin_required = settings.pin_required and consent.method != "quick_opt_in" and contact_id is not None
        _apply(outcome, consent, Trigger.ACCEPT,
               replace(ctx, method="keyword", pin_required=pin_required, customer_initiated=True), org_id, contact_id)
        if consent.awaiting_pin:
            outcome.issue_pin = True
            reply("customer/pin", MessageKind.PIN)
            outcome.to_employee.append(EmployeeNote("employee/pin_sent", consent.channel, consent.address))
        else:
            outcome.release_holds.append((consent.address, consent.channel))
            reply("customer/opt_in_confirmation", MessageKind.OPT_IN_CONFIRMATION)
            if contact_id is not None:
                outcome.to_employee.append(EmployeeNote("employee/contact_opted_in", consent.channel, consent.address))
    elif contact_id is not None:
        consent_mode = settings.mode(consent.channel) is Mode.CONSENT
        if consent.state is State.OPTED_OUT or (consent_mode and consent.state is not State.OPTED_IN):
            outcome.hold_inbound = consent_mode
            if consent.state in (State.UNKNOWN, State.REAUTH_DUE, State.OPTED_OUT):
                _apply(outcome, consent, Trigger.REQUEST_OPT_IN, replace(ctx, customer_initiated=True), org_id,
                       contact_id)
                reply("customer/opt_in_request.customer_started", MessageKind.OPT_IN_REQUEST)
    return outcome
