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
- A bulk import records a consent given elsewhere, dated as given, as a person would
  (`imported_opt_in`): never for a suppressed address, never over an opt-out by anyone but a
  supervisor with evidence of a consent given after it; a consent already on record since that
  date (or a later one) is left alone, so importing the same file twice records nothing twice.
  An imported opt-out always applies, unless the address is opted out already.

The transition table itself (which trigger goes from which state to which) is
`machine.TRANSITIONS`; this module decides which triggers to fire, on what, and what follows.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

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
from .policy import OPT_OUT_CONFIRMATION_WINDOW, MessageKind
from .settings import OrgSettings

# Channels on which an opt-out is confirmed with a message (a call has no message to send).
CONFIRMED_CHANNELS = frozenset({Channel.TEXT, Channel.WHATSAPP, Channel.CHAT, Channel.EMAIL})
# How far ahead of `now` a stated moment may lie (clocks of the people and machines that state it differ).
CLOCK_TOLERANCE = timedelta(minutes=5)
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
    IMPORT = "import"  # a bulk import of opt-outs given elsewhere (a CSV, a CRM)
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


@dataclass(frozen=True)
class PhoneFlags:
    """A phone record's Active and Do-Not-Call, as Collect! keeps them: any opt-in of the phone's
    calls or texts (a re-authorisation too) makes it active and callable; any opt-out of either
    makes it inactive and Do-Not-Call."""

    active: bool
    do_not_call: bool


# The channels of a phone whose opt-ins and opt-outs set its record's flags.
PHONE_FLAG_CHANNELS = frozenset({Channel.CALL, Channel.TEXT})


def phone_flags_from(consents: Sequence[Consent]) -> PhoneFlags | None:
    """The flags a phone record gets from consents recorded before it was a contact's (a number
    that opted out, then was added to a contact): the latest opt-in or opt-out of its calls or
    texts decides; None when neither was ever recorded."""
    latest: tuple[datetime, bool] | None = None
    for consent in consents:
        if consent.channel not in PHONE_FLAG_CHANNELS:
            continue
        if consent.state is State.OPTED_OUT and consent.opted_out_at is not None:
            moment, opted_in = consent.opted_out_at, False
        elif consent.state in (State.OPTED_IN, State.REAUTH_DUE) and consent.opted_in_at is not None:
            moment, opted_in = consent.opted_in_at, True
        else:
            continue
        if latest is None or moment >= latest[0]:
            latest = (moment, opted_in)
    return None if latest is None else PhoneFlags(active=latest[1], do_not_call=not latest[1])


@dataclass
class Outcome:
    """Everything a consent change causes, as data for the service layer to write."""

    changes: list[Change] = field(default_factory=list)
    cancel_outbound: list[tuple[str, Channel]] = field(default_factory=list)
    blocked: ChannelsBlocked | None = None
    call_flags: dict[str, bool] = field(default_factory=dict)  # contact's active / do_not_call
    phone_flags: dict[str, PhoneFlags] = field(default_factory=dict)  # by phone number
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
    """What any consent change brings with it: the phone record's flags, the contact's call
    flags and the event."""
    record = change.record
    if record.channel in PHONE_FLAG_CHANNELS and record.to_state in (State.OPTED_IN, State.OPTED_OUT):
        opted_in = record.to_state is State.OPTED_IN
        outcome.phone_flags[record.address] = PhoneFlags(active=opted_in, do_not_call=not opted_in)
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


def check_revocation(cause: Revocation, now: datetime) -> None:
    """An opt-out's own moment (`occurred_at`, when the customer asked: a call yesterday, a letter)
    may lie in the past, never in the future: that is a typing error to show the person, not
    an opt-out to refuse. Every other part of an opt-out is accepted as it comes."""
    if cause.occurred_at is not None and cause.occurred_at > now + CLOCK_TOLERANCE:
        raise InvalidInput("the moment the customer opted out (occurred_at) cannot be in the future",
                           code="occurred_in_future")


def confirms_opt_out(cause: Revocation, previous: State, already_sent: bool, now: datetime) -> bool:
    """The one confirmation of an opt-out goes when a person asked for it (the customer, or an
    agent for them) on a channel that can carry it. A customer who wrote STOP always hears back
    once; an agent's opt-out is confirmed only on a channel we were messaging them on, and only
    while the confirmation window of the moment the customer asked is open (an opt-out taken
    on a call last week and recorded now gets none: the policy would refuse it anyway). A flow,
    the carrier and the unsubscribe link (which was itself the confirmation) send none."""
    if already_sent or cause.channel not in CONFIRMED_CHANNELS:
        return False
    if cause.occurred_at is not None and now - cause.occurred_at > OPT_OUT_CONFIRMATION_WINDOW:
        return False
    if cause.door is Door.INBOUND:
        return True
    return cause.door is Door.AGENT and cause.actor.kind is not ActorKind.SYSTEM and previous in _WERE_MESSAGING


def revoke(org_id: int, contact_id: int | None, consents: Sequence[Consent], cause: Revocation,
           settings: OrgSettings, now: datetime) -> Outcome:
    """Decide an opt-out. `consents` holds every consent of the contact (or of the lone address
    when no contact owns it), loaded for update; they are changed in place and returned in the
    outcome. Never refuses for a business reason (only a stated moment in the future, a typing
    error, is sent back: `check_revocation`)."""
    check_revocation(cause, now)
    outcome = Outcome()
    scope = opt_out_scope(consents, cause, settings)
    own = scope[0]
    previous = State(own.state)
    declined_own_request = started_by_customer(own)  # Movius's "MT" rejection
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
    if confirms_opt_out(cause, previous, confirmation_sent, now):
        outcome.to_customer.append(CustomerMessage(_variant("customer/opt_out_confirmation", declined_own_request),
                                                   own.channel, own.address,
                                                   MessageKind.OPT_OUT_CONFIRMATION, reply=cause.door is Door.INBOUND))
    if cause.door is Door.INBOUND and contact_id is not None:
        outcome.to_employee.append(EmployeeNote(_variant("employee/contact_opted_out", declined_own_request),
                                                own.channel, own.address))
    return outcome


# ------------------------------------------------------------------------------ other changes


def _is_supervisor(actor: Actor) -> bool:
    return actor.kind is ActorKind.AGENT and actor.role in SUPERVISOR_ROLES


def check_manual_opt_in(consent: Consent, ctx: TransitionContext) -> None:
    """A person records a consent the customer gave outside optflow (a form, a call). Over the
    customer's own opt-out only a supervisor may, with evidence, for a consent given after it:
    an agent cannot reopen an opt-out, and nobody can with a consent older than the opt-out."""
    if consent.state is not State.OPTED_OUT or not ctx.actor.for_business:
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
    if ctx.actor.for_business and not _is_supervisor(ctx.actor):
        raise TransitionRefused("only a supervisor can reset a consent (number reassigned)", code="forbidden")
    if not (ctx.evidence and ctx.evidence.strip()):
        raise InvalidInput("a reset needs a reason (for example: number reassigned to a new person)",
                           code="reason_required")


def check_request(consent: Consent, ctx: TransitionContext) -> None:
    """Whether an employee (or a flow) may ask this address for its consent: never over an
    opt-out (only the customer reopens one) nor over a consent already given."""
    if consent.state is State.OPTED_OUT:
        fire(consent, Trigger.REQUEST_OPT_IN, ctx)  # the machine refuses it, saying why
    if consent.state is State.OPTED_IN:
        raise TransitionRefused(f"{consent.address} is already opted in to {consent.channel.value}",
                                code="already_opted_in")


def change(org_id: int, contact_id: int | None, consent: Consent, trigger: Trigger,
           ctx: TransitionContext) -> Outcome:
    """Decide any change but an opt-out (which has `revoke`): fire `trigger` on `consent` under
    the rules above, and say what follows. Raises a `DomainError` saying why not.

    - an employee's opt-in request: the request to the customer, and to the employee a note
      that it went (a flow's or the system's request has no employee to tell);
    - a PIN read back: the customer's confirmation and the employee's note, and what was held
      for the consent is released."""
    if trigger is Trigger.OPT_OUT:
        raise ValueError("opt-outs are decided by revoke()")
    if trigger is Trigger.RECORD_OPT_IN:
        check_manual_opt_in(consent, ctx)
    if trigger is Trigger.RESET:
        check_reset(ctx)
    requested_by_employee = trigger is Trigger.REQUEST_OPT_IN and not ctx.customer_initiated
    if requested_by_employee:
        check_request(consent, ctx)
    outcome = Outcome()
    done = _apply(outcome, consent, trigger, ctx, org_id, contact_id)
    if trigger is Trigger.RESET:
        # The address belongs to someone else now: what it said about the old owner is gone too.
        consent.do_not_contact = None
        consent.do_not_contact_at = None
    if done.record.to_state is State.OPTED_IN and done.record.from_state is not State.OPTED_IN:
        outcome.release_holds.append((consent.address, consent.channel))
    if requested_by_employee:
        outcome.to_customer.append(CustomerMessage("customer/opt_in_request.employee_started", consent.channel,
                                                   consent.address, MessageKind.OPT_IN_REQUEST, reply=False))
        if ctx.actor.kind is ActorKind.AGENT:
            outcome.to_employee.append(EmployeeNote("employee/opt_in_request_sent", consent.channel, consent.address))
    if trigger is Trigger.CONFIRM_PIN:
        outcome.to_customer.append(CustomerMessage("customer/opt_in_confirmation", consent.channel, consent.address,
                                                   MessageKind.OPT_IN_CONFIRMATION, reply=False))
        outcome.to_employee.append(EmployeeNote("employee/contact_opted_in", consent.channel, consent.address))
    return outcome


def reauthorization_request(consent: Consent) -> Outcome:
    """An employee's (or a flow's) request that the customer renew a consent: only a consent that
    is given or due can be renewed; nothing changes until the customer answers."""
    if consent.state not in (State.OPTED_IN, State.REAUTH_DUE):
        raise TransitionRefused(
            f"re-authorisation needs an existing consent; {consent.address} is {consent.state.value} "
            f"on {consent.channel.value}", code="invalid_transition")
    return Outcome(to_customer=[CustomerMessage("customer/reauth_request", consent.channel, consent.address,
                                                MessageKind.OPT_IN_REQUEST, reply=False)])


def unsubscribe_ends_marketing_only(channel: Channel, marketing_only: bool, has_contact: bool) -> bool:
    """An unsubscribe link is on marketing email only. Pressed as it comes (RFC 8058's one-click
    POST, the page's "stop marketing emails"), it ends the contact's marketing permission and
    leaves their email consent as it is, so receipts and other transactional mail still go; the
    person ends everything with the page's "stop all emails". An address no contact owns has
    no marketing permission to end: the channel is opted out, as an opt-out is never lost."""
    return marketing_only and channel is Channel.EMAIL and has_contact


class RequestPath(enum.StrEnum):
    """Who sent an opt-in request, which decides whether the customer's YES needs a PIN in an
    org that asks for one (its `pin_paths`)."""

    AGENT = "agent"  # an agent's own request (or their first message): the agent waits for the PIN
    SUPERVISOR_LINK = "supervisor_link"  # a supervisor linked a number that wrote in to a contact
    FLOW = "flow"  # a flow's step (the payment plan's request, a business event's)
    QUICK = "quick"  # "quick opt-in": YES alone, always
    CUSTOMER = "customer"  # the customer wrote first (Movius's "MT" case); a PIN as on the agent's path


# The request's path is kept in the requested consent's `method` until the answer (it is replaced
# by the method of the consent then: `keyword`). "quick_opt_in" is how quick requests were marked.
_PATH_MARKERS = {RequestPath.QUICK: "quick_opt_in", RequestPath.AGENT: "request:agent",
                 RequestPath.SUPERVISOR_LINK: "request:supervisor_link", RequestPath.FLOW: "request:flow",
                 RequestPath.CUSTOMER: "request:customer"}
_MARKER_PATHS = {marker: path for path, marker in _PATH_MARKERS.items()}


def request_path(reason: str, quick: bool) -> RequestPath:
    """The path of a request from its command's reason (agent, supervisor_link, flow, event, ...)."""
    if quick:
        return RequestPath.QUICK
    if reason == "supervisor_link":
        return RequestPath.SUPERVISOR_LINK
    if reason in ("flow", "event", "payment_plan"):
        return RequestPath.FLOW
    return RequestPath.AGENT


def mark_request(consent: Consent, path: RequestPath) -> None:
    """Remember on the requested consent which path asked, for the answer (`needs_pin`)."""
    consent.method = _PATH_MARKERS[path]


def needs_pin(consent: Consent, settings: OrgSettings, contact_id: int | None) -> bool:
    """Whether the customer's YES waits for a PIN: in an org that asks for one, for a contact,
    when the request came through one of the org's `pin_paths`. A YES without a marked request
    (the customer wrote first, or an older request) follows the agent's path, as before."""
    if not settings.pin_required or contact_id is None:
        return False
    path = _MARKER_PATHS.get(consent.method or "", RequestPath.AGENT)
    if path is RequestPath.CUSTOMER:
        path = RequestPath.AGENT
    return path is not RequestPath.QUICK and path.value in settings.pin_paths


# The texts of a conversation the customer started (Movius's "MT" case) are templates of their own,
# named with this suffix; those of one an employee started ("MO") keep the plain names.
CUSTOMER_STARTED = ".customer_started"


def started_by_customer(consent: Consent) -> bool:
    """Whether the request this consent waits on went because the customer wrote first."""
    return consent.state is State.REQUESTED and consent.method == _PATH_MARKERS[RequestPath.CUSTOMER]


def _variant(template: str, customer_started: bool) -> str:
    return template + CUSTOMER_STARTED if customer_started else template


def next_request_at(consent: Consent, settings: OrgSettings) -> datetime | None:
    """When another opt-in request may go to an address that was asked and has not answered
    yet (None: now). Customers asked again and again read it as spam; one request, then a
    reminder after the org's `request_interval_hours`."""
    if consent.state is not State.REQUESTED or consent.requested_at is None:
        return None
    return consent.requested_at + timedelta(hours=settings.request_interval_hours)


def may_request_again(consent: Consent, settings: OrgSettings, now: datetime) -> bool:
    allowed = next_request_at(consent, settings)
    return allowed is None or now >= allowed


def check_request_interval(consent: Consent, settings: OrgSettings, now: datetime) -> None:
    """Refuse an opt-in request that follows the last unanswered one too soon (`next_request_at`)."""
    allowed = next_request_at(consent, settings)
    if allowed is not None and now < allowed:
        raise TransitionRefused(
            f"an opt-in request went to {consent.address} by {consent.channel.value} at "
            f"{consent.requested_at.isoformat() if consent.requested_at else 'a moment ago'} and waits for an "
            f"answer; another may go from {allowed.isoformat()}", code="request_too_soon")


class HeldMessageRequest(enum.StrEnum):
    """What an agent's message to a customer without a usable consent sends besides being held."""

    OPT_IN = "opt_in"  # a fresh opt-in request: the consent becomes `requested`
    REAUTH = "reauth"  # the re-authorisation request: the consent stays `reauth_due`
    NONE = "none"  # a request already waits for the customer's answer


def request_for_held_message(state: State, already_holding: bool) -> HeldMessageRequest:
    """An agent writes to a customer whose consent the message needs (consent mode). The message
    is held; which request goes with it depends on the consent:

    - `reauth_due`: the customer consented and the consent aged. The re-authorisation request
      goes (once, while messages wait) and the consent stays `reauth_due`, so the customer's
      YES or the agent's record of a spoken renewal (`reauthorize`) still renews it; either
      releases the held messages. A fresh opt-in request would move it to `requested`, where
      the agent could no longer record the renewal.
    - `requested`: the request already went; nothing more.
    - otherwise (`unknown`): the opt-in request."""
    if state is State.REAUTH_DUE:
        return HeldMessageRequest.NONE if already_holding else HeldMessageRequest.REAUTH
    if state is State.REQUESTED:
        return HeldMessageRequest.NONE
    return HeldMessageRequest.OPT_IN


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
        if consent.state is State.REAUTH_DUE:  # what an agent wrote meanwhile waited for this
            outcome.release_holds.append((consent.address, consent.channel))
        _apply(outcome, consent, Trigger.REAUTHORIZE, replace(ctx, method="keyword"), org_id, contact_id)
        reply("customer/opt_in_confirmation", MessageKind.OPT_IN_CONFIRMATION)
    elif intent is Intent.OPT_IN:
        customer_started = started_by_customer(consent)
        pin_required = needs_pin(consent, settings, contact_id)
        _apply(outcome, consent, Trigger.ACCEPT,
               replace(ctx, method="keyword", pin_required=pin_required, customer_initiated=True), org_id, contact_id)
        if consent.awaiting_pin:
            outcome.issue_pin = True
            reply("customer/pin", MessageKind.PIN)
            outcome.to_employee.append(EmployeeNote("employee/pin_sent", consent.channel, consent.address))
        else:
            outcome.release_holds.append((consent.address, consent.channel))
            reply(_variant("customer/opt_in_confirmation", customer_started), MessageKind.OPT_IN_CONFIRMATION)
            if contact_id is not None:
                outcome.to_employee.append(EmployeeNote(_variant("employee/contact_opted_in", customer_started),
                                                        consent.channel, consent.address))
    elif contact_id is not None:
        consent_mode = settings.mode(consent.channel) is Mode.CONSENT
        if consent.state is State.OPTED_OUT or (consent_mode and consent.state is not State.OPTED_IN):
            outcome.hold_inbound = consent_mode
            if consent.state in (State.UNKNOWN, State.REAUTH_DUE, State.OPTED_OUT):
                _apply(outcome, consent, Trigger.REQUEST_OPT_IN, replace(ctx, customer_initiated=True), org_id,
                       contact_id)
                mark_request(consent, RequestPath.CUSTOMER)
                reply("customer/opt_in_request.customer_started", MessageKind.OPT_IN_REQUEST)
                # Movius's "MT" note: the employee learns that someone wrote and was asked first.
                outcome.to_employee.append(EmployeeNote("employee/opt_in_request_sent.customer_started",
                                                        consent.channel, consent.address))
    return outcome


# ------------------------------------------------------------------------------------ imports


def imported_opt_in(org_id: int, contact_id: int | None, consent: Consent, ctx: TransitionContext,
                    suppression: str | None) -> Outcome:
    """Decide a consent from a bulk import (a CSV row, a CRM): `ctx.occurred_at` is when the
    customer gave it. An empty outcome means the consent on record already covers it (given then
    or later): nothing to record. Raises a `DomainError` saying why not."""
    if suppression is not None:
        raise TransitionRefused(f"{consent.address} is on the suppression list ({suppression}); it cannot be "
                                "opted in", code="suppressed")
    given = ctx.occurred_at
    if given is None:
        raise InvalidInput("an imported consent needs the moment it was given", code="occurred_at_required")
    if consent.state in (State.OPTED_IN, State.REAUTH_DUE):
        if consent.opted_in_at is not None and consent.opted_in_at >= given:
            return Outcome()
        # A consent given after the one on record renews it (restarts its clock).
        return change(org_id, contact_id, consent, Trigger.REAUTHORIZE, ctx)
    return change(org_id, contact_id, consent, Trigger.RECORD_OPT_IN, ctx)


def imported_opt_out_applies(consent: Consent) -> bool:
    """An imported opt-out applies to a consent not opted out already (a repeated import of the
    same opt-out records nothing more)."""
    return consent.state is not State.OPTED_OUT
