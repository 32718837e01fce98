"""Commands: what entry points ask the service layer to do. One handler each, one transaction each."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .consent_rules import Door
from .model import Actor, Channel, Purpose


@dataclass(frozen=True)
class Command:
    pass


@dataclass(frozen=True)
class ReceiveInbound(Command):
    """A customer's message from a webhook. `org_id` None: find the org by the `to` number."""

    channel: Channel
    from_address: str
    to_address: str
    body: str
    provider_id: str | None = None
    opt_out_type: str | None = None  # Twilio Advanced Opt-Out: STOP | START | HELP
    org_id: int | None = None


@dataclass(frozen=True)
class CreateContact(Command):
    org_id: int
    name: str = ""
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    time_zone: str | None = None
    region: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    marketing_allowed: bool = True
    language: str | None = None
    actor: Actor | None = None  # who creates it (the ledger names them for a declined marketing); None: the system
    external_id: str | None = None  # the contact's key in the business's CRM


@dataclass(frozen=True)
class UpsertContact(Command):
    """Create or update the contact the business's CRM knows as `external_id` (a CRM sync).

    Only what is given changes (None: unchanged); addresses are only ever added. Sending the
    same body again changes nothing and records nothing."""

    org_id: int
    external_id: str
    actor: Actor
    name: str | None = None
    phones: tuple[str, ...] = ()
    emails: tuple[str, ...] = ()
    time_zone: str | None = None
    region: str | None = None
    fields: dict[str, Any] | None = None
    marketing_allowed: bool | None = None


@dataclass(frozen=True)
class ImportConsent(Command):
    """One consent of a bulk import: a consent (or an opt-out) the customer gave elsewhere, at
    `occurred_at`. The contact is found by `external_id`, else by the address, and created
    when `external_id` or `name` is given and none is found."""

    org_id: int
    actor: Actor
    channel: Channel
    address: str
    opted_in: bool  # False: an opt-out
    occurred_at: datetime
    method: str
    evidence: str | None = None
    external_id: str | None = None
    name: str | None = None
    other_addresses: tuple[str, ...] = ()  # more addresses of the contact (the phone of an email row ...)


@dataclass(frozen=True)
class AddSuppression(Command):
    """Put an address on the org's suppression list (`channel` None: every channel)."""

    org_id: int
    actor: Actor
    address: str
    reason: str
    channel: Channel | None = None


@dataclass(frozen=True)
class UpdateContact(Command):
    org_id: int
    contact_id: int
    name: str | None = None
    time_zone: str | None = None
    region: str | None = None
    fields: dict[str, Any] | None = None
    add_phones: tuple[str, ...] = ()
    add_emails: tuple[str, ...] = ()
    language: str | None = None  # "" clears it


@dataclass(frozen=True)
class ContactAction(Command):
    """Base of the agent actions on one contact's channel."""

    org_id: int
    contact_id: int
    channel: Channel
    actor: Actor
    address: str | None = None  # which of the contact's addresses; None: the first that fits


@dataclass(frozen=True)
class RequestOptIn(ContactAction):
    quick: bool = False  # "quick opt-in": the customer's YES opts in without a PIN
    reason: str = "agent"  # agent | payment_plan | supervisor_link | flow | event
    held_message: str = ""  # the agent's message that waits for the consent (they wrote; the request followed)


@dataclass(frozen=True)
class RecordOptIn(ContactAction):
    method: str = ""
    occurred_at: datetime | None = None
    evidence: str | None = None


@dataclass(frozen=True)
class ConfirmPin(ContactAction):
    pin: str = ""


@dataclass(frozen=True)
class Reauthorize(ContactAction):
    method: str = "text"
    occurred_at: datetime | None = None
    evidence: str | None = None


@dataclass(frozen=True)
class SendReauthRequest(ContactAction):
    """"Text Reauth": ask the customer to confirm an ageing consent; their YES reauthorises."""


@dataclass(frozen=True)
class OptOut(ContactAction):
    all_channels: bool = False
    method: str = "agent"
    evidence: str | None = None
    occurred_at: datetime | None = None  # when the customer asked, if not now


@dataclass(frozen=True)
class OptOutAddress(Command):
    """Opt an address out on a channel whether or not a contact owns it (one-click unsubscribe).

    The request itself was the customer's confirmation, so no confirmation message is sent."""

    org_id: int
    address: str
    channel: Channel
    actor: Actor
    method: str
    evidence: str | None = None
    door: Door = Door.ONE_CLICK
    source_message_id: str | None = None
    # The person asked to stop marketing only (an email's unsubscribe link, "stop marketing
    # emails"): see `consent_rules.unsubscribe_ends_marketing_only`.
    marketing_only: bool = False


@dataclass(frozen=True)
class ResetConsent(ContactAction):
    """The number was reassigned: the old consent does not carry over."""

    evidence: str | None = None


@dataclass(frozen=True)
class LiftDoNotContact(ContactAction):
    """A supervisor takes the address off do-not-contact on the channel, saying why."""

    evidence: str | None = None


@dataclass(frozen=True)
class SetDnd(Command):
    org_id: int
    contact_id: int
    actor: Actor
    on: bool
    channels: tuple[Channel, ...] = ()  # empty with all_channels
    all_channels: bool = False


@dataclass(frozen=True)
class SetMarketing(Command):
    org_id: int
    contact_id: int
    actor: Actor
    allowed: bool


@dataclass(frozen=True)
class SendMessage(Command):
    """An employee's one-to-one message (or a transactional one) to a contact."""

    org_id: int
    contact_id: int
    channel: Channel
    body: str
    actor: Actor
    purpose: Purpose = Purpose.CONVERSATIONAL
    subject: str | None = None
    address: str | None = None
    template: WhatsAppTemplate | None = None  # WhatsApp only: an approved template instead of free text


@dataclass(frozen=True)
class WhatsAppTemplate:
    """An approved WhatsApp template (by the name the org registered) and its variables."""

    name: str
    variables: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordDeliveryStatus(Command):
    """A provider's delivery report on an outbound message (Twilio's status callback): the message
    is found by our id when the callback URL carried it, else by the provider's id."""

    org_id: int
    provider_id: str
    provider_status: str
    error_code: str | None = None
    message_id: int | None = None


@dataclass(frozen=True)
class MailFeedback:
    """One address a mail provider or a bounce report says bounced, or whose owner complained."""

    address: str
    complaint: bool  # True: a spam complaint; False: a permanent bounce
    evidence: str | None = None


@dataclass(frozen=True)
class ReportMailFeedback(Command):
    """Bounces and complaints from a mail provider's webhook or a bounce mailbox (`source` names it)."""

    org_id: int
    items: tuple[MailFeedback, ...]
    source: str


@dataclass(frozen=True)
class RecordCallAttempt(Command):
    """A call a dialler placed outside optflow: it counts against the caps; an outcome of
    `do_not_call` (the person asked not to be called) opts the number out of calls."""

    org_id: int
    address: str  # E.164
    actor: Actor
    placed_at: datetime
    outcome: str
    purpose: Purpose = Purpose.TRANSACTIONAL
    contact_id: int | None = None
    note: str | None = None


@dataclass(frozen=True)
class LinkUnassociated(Command):
    """A supervisor links a number that wrote in to a contact; this sends the opt-in request."""

    org_id: int
    message_id: int
    contact_id: int
    actor: Actor


@dataclass(frozen=True)
class EnrollContact(Command):
    """Enrol a contact in a flow by hand (an agent, the API, a CSV); its first steps run at once."""

    org_id: int
    contact_id: int
    flow: str
    actor: Actor
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoveEnrollment(Command):
    org_id: int
    contact_id: int
    enrollment_id: int
    actor: Actor


@dataclass(frozen=True)
class RecordEvent(Command):
    """A business event (payment_plan.created, pipeline.stage_changed ...) for flows to react to."""

    org_id: int
    name: str
    contact_id: int
    data: dict[str, Any] = field(default_factory=dict)
    actor: Actor | None = None
