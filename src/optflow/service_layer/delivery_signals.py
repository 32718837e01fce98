"""What comes back after a message left, and calls placed elsewhere: delivery reports, carrier
errors, email bounces and complaints, and a dialler's attempts and pre-call checks.

Every effect on an address goes through the consent rules: an opt-out the provider holds for
the person (Twilio 21610, a spam complaint) is `handlers.revoke` through its door, so it is
recorded, cancels what is queued and stops flows exactly like a STOP; an address that cannot take
messages (a bounce, Twilio 30004/30005/30006) is `consent_rules.mark_undeliverable`, which leaves
the consent as it was and puts the (address, channel) on do-not-contact with the reason, in the
ledger too. The send policy refuses both (`domain/policy.py`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..domain import commands as c
from ..domain import consent_rules as rules
from ..domain.addresses import normalize_email, normalize_for_channel
from ..domain.delivery import Undeliverable, carrier_effect, describe, is_delivery_report, reported_status
from ..domain.model import Actor, ActorKind, Channel, InvalidInput, NotFound, Purpose, State
from ..domain.policy import Decision, MessageKind
from ..domain.records import Audience, Contact, Direction, Message, MessageStatus
from ..domain.redaction import mask_address
from .handlers import ActionResult, Services, opt_out_address, policy_decision, revoke
from .unit_of_work import UnitOfWork

log = logging.getLogger("optflow.delivery_signals")

CARRIER = Actor(ActorKind.SYSTEM, "carrier")
# A dialler's outcome that means the person asked not to be called again.
DO_NOT_CALL = "do_not_call"
CALL_OUTCOMES = ("connected", "no_answer", "busy", "voicemail", "failed", "wrong_number", DO_NOT_CALL)


def mark_address(uow: UnitOfWork, org_id: int, signal: rules.AddressSignal, now: datetime) -> bool:
    """Put the signal's (address, channel) on do-not-contact: the consent row (state unchanged),
    a ledger entry, and nothing still queued to it goes. Whether anything changed."""
    consent = uow.consents.get(org_id, signal.address, signal.channel, lock=True)
    if consent.contact_id is None:
        contact_id = uow.contacts.find_by_address(org_id, signal.address)
        consent.contact_id = contact_id
    marked = rules.mark_undeliverable(consent, signal, now)
    if marked is None:
        return False
    uow.consents.save(consent, now)
    uow.ledger.append_change(
        org_id, consent.contact_id, channel=signal.channel.value, address=signal.address,
        from_state=f"do_not_contact:{marked.previous or 'none'}", to_state=f"do_not_contact:{signal.reason.value}",
        trigger="do_not_contact_on", method=signal.door.value, actor_kind=signal.actor.kind.value,
        actor_id=signal.actor.id, source_message_id=signal.source_message_id,
        evidence=(signal.evidence or describe(signal.reason))[:1000], occurred_at=now, recorded_at=now,
    )
    for message_id in uow.messages.queued_for(org_id, signal.address, (signal.channel,)):
        uow.messages.set(message_id, status=MessageStatus.CANCELLED,
                         last_error=f"address on do-not-contact: {signal.reason.value}")
    log.info("%s is on do-not-contact for %s: %s", mask_address(signal.address), signal.channel.value,
             signal.reason.value)
    return True


def apply_carrier_error(uow: UnitOfWork, svc: Services, message: Message, error_code: str, evidence: str,
                        now: datetime) -> None:
    """What a provider's error code on `message` means for its address (`delivery.carrier_effect`)."""
    effect = carrier_effect(error_code)
    source = f"message:{message.id}"
    if effect.opt_out:
        opt_out_address(c.OptOutAddress(message.org_id, message.address, message.channel, CARRIER, method="carrier",
                                        evidence=evidence[:500], door=rules.Door.CARRIER, source_message_id=source),
                        uow, svc, now)
    elif effect.undeliverable is not None:
        mark_address(uow, message.org_id, rules.AddressSignal(
            rules.Door.CARRIER, CARRIER, message.address, message.channel, effect.undeliverable,
            evidence=evidence[:500], source_message_id=source), now)


def lift_do_not_contact(cmd: c.LiftDoNotContact, uow: UnitOfWork, svc: Services, now: datetime) -> ActionResult:
    """A supervisor's lift of a do-not-contact mark (`consent_rules.lift_do_not_contact`), in the ledger."""
    uow.contacts.get(cmd.org_id, cmd.contact_id)
    address = _address_of(uow, cmd)
    consent = uow.consents.get(cmd.org_id, address, cmd.channel, lock=True)
    previous = rules.lift_do_not_contact(consent, cmd.actor, cmd.evidence)
    uow.consents.save(consent, now)
    uow.ledger.append_change(
        cmd.org_id, cmd.contact_id, channel=cmd.channel.value, address=address,
        from_state=f"do_not_contact:{previous}", to_state="do_not_contact:none", trigger="do_not_contact_off",
        method=cmd.actor.kind.value, actor_kind=cmd.actor.kind.value, actor_id=cmd.actor.id, source_message_id=None,
        evidence=(cmd.evidence or "")[:1000], occurred_at=now, recorded_at=now,
    )
    return ActionResult(cmd.contact_id, cmd.channel, consent.state, status="do_not_contact_lifted")


def _address_of(uow: UnitOfWork, cmd: c.ContactAction) -> str:
    """The contact's address the action names, or their first one of the channel's kind."""
    kind = "email" if cmd.channel is Channel.EMAIL else "phone"
    rows = [row.value for row in uow.contacts.addresses(cmd.contact_id) if row.kind == kind]
    if cmd.address is not None:
        wanted = normalize_for_channel(cmd.address, cmd.channel)
        if wanted not in rows:
            raise InvalidInput(f"{mask_address(wanted)} is not an address of contact {cmd.contact_id}",
                               code="unknown_address")
        return wanted
    if not rows:
        raise InvalidInput(f"contact {cmd.contact_id} has no address for {cmd.channel.value}", code="no_address")
    return rows[0]


# ------------------------------------------------------------------------------ delivery reports


@dataclass(frozen=True)
class DeliveryReportResult:
    message_id: int
    status: MessageStatus  # the message's status after the report


def record_delivery_status(cmd: c.RecordDeliveryStatus, uow: UnitOfWork, svc: Services,
                           now: datetime) -> DeliveryReportResult:
    """Move the message along (never back: reports arrive out of order), keep the provider's
    status and error code, and apply what the error code means for the address."""
    message = _reported_message(uow, cmd)
    new = reported_status(message.status, cmd.provider_status)
    if is_delivery_report(message.status, cmd.provider_status):
        values: dict[str, Any] = {"provider_status": cmd.provider_status[:40], "error_code": cmd.error_code}
        if message.provider_id is None:
            values["provider_id"] = cmd.provider_id
        if new is not None:
            values["status"] = new
            if new is not MessageStatus.SENT:
                values["last_error"] = f"{cmd.provider_status} (error {cmd.error_code})" if cmd.error_code else None
        uow.messages.set(message.id, **values)
    if cmd.error_code:
        apply_carrier_error(uow, svc, message, cmd.error_code,
                            f"provider reported {cmd.provider_status} with error {cmd.error_code}", now)
    return DeliveryReportResult(message.id, new or message.status)


def _reported_message(uow: UnitOfWork, cmd: c.RecordDeliveryStatus) -> Message:
    message = uow.messages.get(cmd.message_id) if cmd.message_id is not None else \
        uow.messages.find_outbound(cmd.org_id, cmd.provider_id)
    if message is None or message.org_id != cmd.org_id or message.direction is not Direction.OUT \
            or message.audience is not Audience.CUSTOMER \
            or (message.provider_id is not None and message.provider_id != cmd.provider_id):
        raise NotFound(f"no outbound message {cmd.provider_id!r} in this org", code="message_not_found")
    return message


# ------------------------------------------------------------------------------ bounces, complaints


@dataclass(frozen=True)
class MailFeedbackResult:
    bounced: int = 0
    complained: int = 0
    unchanged: int = 0  # already on do-not-contact with that reason
    invalid: tuple[str, ...] = ()  # what was not an email address


def report_mail_feedback(cmd: c.ReportMailFeedback, uow: UnitOfWork, svc: Services,
                         now: datetime) -> MailFeedbackResult:
    """A permanent bounce marks the address `bounced` on email; a spam complaint is an opt-out of
    email (door `complaint`: no confirmation goes) and marks it `complained`."""
    bounced = complained = unchanged = 0
    invalid: list[str] = []
    actor = Actor(ActorKind.SYSTEM, f"mail:{cmd.source}"[:100])
    for item in cmd.items:
        try:
            address = normalize_email(item.address)
        except InvalidInput:
            invalid.append(item.address[:320])
            continue
        evidence = (item.evidence or "")[:500] or None
        if item.complaint:
            opt_out_address(c.OptOutAddress(cmd.org_id, address, Channel.EMAIL, actor, method="spam_complaint",
                                            evidence=evidence, door=rules.Door.COMPLAINT), uow, svc, now)
        reason = Undeliverable.COMPLAINED if item.complaint else Undeliverable.BOUNCED
        door = rules.Door.COMPLAINT if item.complaint else rules.Door.BOUNCE
        if mark_address(uow, cmd.org_id, rules.AddressSignal(door, actor, address, Channel.EMAIL, reason,
                                                             evidence=evidence), now):
            complained += item.complaint
            bounced += not item.complaint
        else:
            unchanged += 1
    return MailFeedbackResult(bounced, complained, unchanged, tuple(invalid))


# ------------------------------------------------------------------------------ diallers


@dataclass(frozen=True)
class AttemptResult:
    message_id: int
    contact_id: int | None
    state: State  # the call consent after the attempt


def record_call_attempt(cmd: c.RecordCallAttempt, uow: UnitOfWork, svc: Services, now: datetime) -> AttemptResult:
    """Store the call as an outbound `dialled` message at the moment it was placed, so frequency
    caps (Reg F's 7 in 7) count it; a `do_not_call` outcome is the person's opt-out of calls,
    recorded through the agent's door with the agent as actor."""
    if cmd.outcome not in CALL_OUTCOMES:
        raise InvalidInput(f"unknown outcome {cmd.outcome!r}: use one of {', '.join(CALL_OUTCOMES)}",
                           code="invalid_outcome")
    if cmd.placed_at > now:
        raise InvalidInput("placed_at is in the future: record a call once it was placed", code="invalid_time")
    contact = _callee(uow, cmd.org_id, cmd.contact_id, cmd.address)
    actor_id = cmd.actor.id or ""
    agent_id = int(actor_id) if cmd.actor.kind is ActorKind.AGENT and actor_id.isdigit() else None
    message_id = uow.messages.add(
        org_id=cmd.org_id, contact_id=contact.id if contact else None, direction=Direction.OUT,
        audience=Audience.CUSTOMER, channel=Channel.CALL.value, address=cmd.address,
        body=f"call placed by a dialler: {cmd.outcome}" + (f" ({cmd.note})" if cmd.note else ""),
        purpose=cmd.purpose.value, kind=MessageKind.NORMAL.value, status=MessageStatus.DIALLED,
        created_at=now, sent_at=cmd.placed_at, agent_id=agent_id, provider_status=cmd.outcome,
    )
    if cmd.outcome == DO_NOT_CALL:
        revoke(uow, svc, cmd.org_id, contact, rules.Revocation(
            rules.Door.AGENT, cmd.actor, cmd.address, Channel.CALL, method="verbal",
            evidence=cmd.note or "asked not to be called, on a call placed by a dialler", occurred_at=cmd.placed_at,
            source_message_id=f"message:{message_id}"), now)
    state = uow.consents.get(cmd.org_id, cmd.address, Channel.CALL).state
    return AttemptResult(message_id, contact.id if contact else None, state)


def _callee(uow: UnitOfWork, org_id: int, contact_id: int | None, address: str) -> Contact | None:
    """The contact called: the one named (the number must be one of theirs), else the number's."""
    if contact_id is None:
        return uow.contacts.at_address(org_id, address)
    contact = uow.contacts.get(org_id, contact_id)
    if not any(row.value == address for row in uow.contacts.addresses(contact_id)):
        raise InvalidInput(f"{mask_address(address)} is not a number of contact {contact_id}", code="unknown_address")
    return contact


def check_call(uow: UnitOfWork, org_id: int, address: str, contact_id: int | None, channel: Channel,
               purpose: Purpose, now: datetime) -> Decision:
    """The pre-call check: the same policy decision as a send (consent and mode, do-not-contact,
    DND, marketing permission, quiet hours in the callee's zones, frequency caps counting what
    was handed over or dialled), for a message or call the business starts now."""
    contact = _callee(uow, org_id, contact_id, address)
    settings = uow.orgs.settings(org_id)
    consent = uow.consents.get(org_id, address, channel)
    return policy_decision(uow, settings, contact, consent, purpose, MessageKind.NORMAL, now, at_hand_over=True)


HANDLERS: dict[type, Any] = {
    c.RecordDeliveryStatus: record_delivery_status,
    c.ReportMailFeedback: report_mail_feedback,
    c.RecordCallAttempt: record_call_attempt,
    c.LiftDoNotContact: lift_do_not_contact,
}
