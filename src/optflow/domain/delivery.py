"""What providers tell us after a message left: delivery reports and the errors that say an
address cannot, or must not, be messaged. Pure: no IO, no clock.

Two kinds of "do not message this address" come back from providers, and they are kept apart:

- **the person's own opt-out**, held by the provider: Twilio's 21610 (the recipient texted STOP
  to Twilio) and an email spam complaint. These are opt-outs and go through the consent decision
  (`consent_rules.revoke`), with a ledger entry like any other opt-out;
- **the address cannot take messages on the channel**: a permanent email bounce, and the
  carrier's 30004 (blocked), 30005 (unknown or inactive number) and 30006 (landline or
  unreachable carrier). Nobody opted out; the consent stays what it was and the address is marked
  do-not-contact on that channel with the reason (`Undeliverable`), which the send policy refuses
  on. A complaint is marked too (`complained`), so the reason stays visible beside the opt-out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .records import MessageStatus


class Undeliverable(enum.StrEnum):
    """Why an address is on do-not-contact for one channel (stored as this text)."""

    BOUNCED = "bounced"  # a permanent email bounce (SMTP 5xx at RCPT, a DSN, a provider's event)
    COMPLAINED = "complained"  # the recipient marked our mail as spam (also an opt-out of email)
    CARRIER_BLOCKED = "carrier_blocked"  # Twilio 30004: the carrier or the recipient blocks our messages
    UNKNOWN_NUMBER = "unknown_number"  # Twilio 30005: the number is unknown, inactive or not in service
    NOT_TEXTABLE = "not_textable"  # Twilio 30006: a landline, or a carrier that cannot take texts


# Twilio error codes (https://www.twilio.com/docs/api/errors) and what they mean for the address.
TWILIO_UNSUBSCRIBED = "21610"  # the recipient opted out with Twilio: an opt-out, see module docstring
TWILIO_UNDELIVERABLE = {
    "30004": Undeliverable.CARRIER_BLOCKED,
    "30005": Undeliverable.UNKNOWN_NUMBER,
    "30006": Undeliverable.NOT_TEXTABLE,
}

_REASON_WORDS = {
    Undeliverable.BOUNCED: "the email address bounced permanently",
    Undeliverable.COMPLAINED: "the recipient reported our email as spam",
    Undeliverable.CARRIER_BLOCKED: "the carrier blocks messages to this number (Twilio 30004)",
    Undeliverable.UNKNOWN_NUMBER: "the number is unknown or not in service (Twilio 30005)",
    Undeliverable.NOT_TEXTABLE: "the number is a landline or cannot receive texts (Twilio 30006)",
}


def describe(reason: Undeliverable) -> str:
    return _REASON_WORDS[reason]


def error_meaning(error_code: str | None) -> str | None:
    """What a provider's error code says about the address, in words (for people reading a
    message's status); None for a code that says nothing about the address."""
    effect = carrier_effect(error_code)
    if effect.opt_out:
        return "the recipient opted out with the provider (Twilio 21610)"
    return describe(effect.undeliverable) if effect.undeliverable is not None else None


@dataclass(frozen=True)
class CarrierEffect:
    """What a provider's error code means for the address: an opt-out, a do-not-contact mark, or
    nothing (a content filter, a temporary fault)."""

    opt_out: bool = False
    undeliverable: Undeliverable | None = None


def carrier_effect(error_code: str | None) -> CarrierEffect:
    code = (error_code or "").strip()
    if code == TWILIO_UNSUBSCRIBED:
        return CarrierEffect(opt_out=True)
    return CarrierEffect(undeliverable=TWILIO_UNDELIVERABLE.get(code))


# Twilio's MessageStatus values as optflow's message statuses. Statuses before the hand-over
# (queued, accepted, scheduled, sending) say nothing new: the message was handed over already.
_TWILIO_STATUSES = {
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "read": MessageStatus.DELIVERED,
    "partially_delivered": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.FAILED,
}
KNOWN_TWILIO_STATUSES = frozenset({*_TWILIO_STATUSES, "queued", "accepted", "scheduled", "sending"})

# How far a status is along the way; a report never moves a message back. `failed` set by the
# dispatcher itself (a refusal at the API, no report will follow) is final too.
_RANK = {
    MessageStatus.HANDED_OVER: 0,
    MessageStatus.SENT: 1,
    MessageStatus.DELIVERED: 2,
    MessageStatus.UNDELIVERED: 2,
    MessageStatus.FAILED: 2,
}


def is_delivery_report(current: MessageStatus, provider_status: str) -> bool:
    """Whether the report says something about a message that was handed over: Twilio's statuses
    before the hand-over (queued, accepted, ...) and reports on a message that is not (queued
    again for a retry, refused) are kept nowhere, so the dispatcher still records its own outcome."""
    return provider_status.strip().lower() in _TWILIO_STATUSES and current in _RANK


def reported_status(current: MessageStatus, provider_status: str) -> MessageStatus | None:
    """The status a provider's report moves an outbound message to, or None when it moves it
    nowhere: an earlier or equal step (reports arrive out of order), a report on a message that
    was never handed over, or a status Twilio names that adds nothing."""
    new = _TWILIO_STATUSES.get(provider_status.strip().lower())
    if new is None or current not in _RANK:
        return None
    return new if _RANK[new] > _RANK[current] else None
