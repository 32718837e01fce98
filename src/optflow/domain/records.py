"""What the repositories hand back: one slotted dataclass per stored row, and the statuses.

The adapters build these positionally from the driver's row (`adapters/records.py`), so each
record's fields are its table's columns, in the table's order (a test holds them to it). Statuses
and the other closed vocabularies are `StrEnum`s: a member is equal to its text, so it is stored
as that text and the schema does not change, while a misspelt member is an error mypy reports.

Nothing here does IO or reads the clock.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from .model import Channel, DndSettings, Intent, Purpose
from .policy import MessageKind


class Direction(enum.StrEnum):
    IN = "in"
    OUT = "out"


class Audience(enum.StrEnum):
    """Whom a message is for: the customer, or the employee it notifies (stored, never sent)."""

    CUSTOMER = "customer"
    EMPLOYEE = "employee"


class MessageStatus(enum.StrEnum):
    """Where a message is. Outbound through the outbox (service_layer/dispatcher.py):
    QUEUED -> SENDING (claimed, leased) -> HANDED_OVER (given to the provider) -> SENT | FAILED,
    then, by the provider's delivery report, DELIVERED | UNDELIVERED | FAILED (never back);
    or QUEUED again (a retry or deferral); DENIED (the policy refused it at hand-over), CANCELLED
    (an opt-out or DND stopped it), HELD (waiting for the customer's YES). Replies given in the
    webhook's answer are REPLIED (or DENIED); employee notes are DELIVERED. Inbound: RECEIVED
    (before its handling is stored), DELIVERED to the employee, HELD until the customer's YES, or
    UNASSOCIATED (no contact owns the sender's address yet). A call a dialler placed outside
    optflow is stored DIALLED (POST /api/v1/attempts)."""

    QUEUED = "queued"
    SENDING = "sending"
    HANDED_OVER = "handed_over"
    SENT = "sent"
    FAILED = "failed"
    DENIED = "denied"
    CANCELLED = "cancelled"
    HELD = "held"
    UNDELIVERED = "undelivered"  # the provider reported it could not deliver it (Twilio's status callback)
    DIALLED = "dialled"  # a call a dialler placed outside optflow, recorded through /attempts
    REPLIED = "replied"
    DELIVERED = "delivered"
    UNASSOCIATED = "unassociated"
    RECEIVED = "received"


# Outbound rows that can still be stopped: queued, or claimed and not handed to a provider yet.
NOT_HANDED_OVER = (MessageStatus.QUEUED, MessageStatus.SENDING)
# Rows whose `sent_at` is the moment they were handed to a provider: delivered, in flight, or of
# unknown outcome (a `failed` row keeps `sent_at` only then; a refusal clears it).
# Delivery reports (DELIVERED, UNDELIVERED) and calls dialled elsewhere count as handed over too.
HANDED_OVER = (MessageStatus.SENT, MessageStatus.HANDED_OVER, MessageStatus.FAILED, MessageStatus.DELIVERED,
               MessageStatus.UNDELIVERED, MessageStatus.DIALLED)


class EnrollmentStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"  # do not disturb on a channel its remaining steps use
    DONE = "done"
    CANCELLED = "cancelled"


# Enrolments still running (a paused one resumes when DND is lifted), and those that ended.
RUNNING = (EnrollmentStatus.ACTIVE, EnrollmentStatus.PAUSED)
ENDED = (EnrollmentStatus.DONE, EnrollmentStatus.CANCELLED)


class DeliveryStatus(enum.StrEnum):
    """A webhook's delivery (`webhook_deliveries`): QUEUED -> SENDING (leased) ->
    DELIVERED | FAILED, or QUEUED again for a retry."""

    QUEUED = "queued"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


@dataclass(slots=True, frozen=True)
class Org:
    id: int
    name: str
    parent_id: int | None
    settings_json: str
    created_at: datetime

    def own_settings(self) -> dict[str, Any]:
        """The settings stored on this org itself (without what it inherits)."""
        settings: dict[str, Any] = json.loads(self.settings_json or "{}")
        return settings


# An agent's role, from least to most allowed, then `integration`: another system's token, with an
# agent's rights (stored as this text; `admin.add_agent` checks it).
Role = Literal["agent", "supervisor", "admin", "integration"]


@dataclass(slots=True, frozen=True)
class Agent:
    id: int
    org_id: int
    name: str
    role: Role
    token_hash: str
    created_at: datetime
    expires_at: datetime | None  # None: never
    revoked_at: datetime | None
    last_used_at: datetime | None
    email: str | None  # signs in to the console with it (lower case)
    password_hash: str | None  # argon2; None: no console sign-in


@dataclass(slots=True, frozen=True)
class ConsoleSession:
    """A person signed in to the console (`console_sessions`; the token's hash is not read back)."""

    id: int
    agent_id: int
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime


@dataclass(slots=True, frozen=True)
class Contact:
    id: int
    org_id: int
    name: str
    time_zone: str | None
    region: str | None
    fields_json: str
    active: bool
    do_not_call: bool
    marketing_allowed: bool
    dnd_all: bool
    dnd_channels: str  # comma-separated channels
    created_at: datetime
    updated_at: datetime
    language: str | None  # set by an agent or learned from the customer's words; None: not known
    external_id: str | None  # the contact's key in the business's CRM

    @property
    def dnd(self) -> DndSettings:
        if not self.dnd_channels:  # most contacts: one of two shared values, read for every message
            return _DND_EVERYTHING if self.dnd_all else _NO_DND
        channels = frozenset(Channel(c) for c in self.dnd_channels.split(",") if c)
        return DndSettings(all_channels=self.dnd_all, channels=channels)

    def fields(self) -> dict[str, Any]:
        """The contact's own fields (arbitrary JSON values by name)."""
        fields: dict[str, Any] = json.loads(self.fields_json or "{}")
        return fields


_NO_DND = DndSettings()
_DND_EVERYTHING = DndSettings(all_channels=True)


@dataclass(slots=True, frozen=True)
class Address:
    id: int
    org_id: int
    contact_id: int
    kind: str  # phone | email
    value: str  # E.164 or normalised email
    active: bool  # a phone's: its last call or text opt-in set it, its last opt-out cleared it
    do_not_call: bool  # a phone's: the opposite of `active` once either was recorded

    def phone_flags(self) -> dict[str, bool]:
        """A phone record's Active and Do-Not-Call flags, by name (an email has none)."""
        return {"active": self.active, "do_not_call": self.do_not_call} if self.kind == "phone" else {}


@dataclass(slots=True, frozen=True)
class Message:
    id: int
    org_id: int
    contact_id: int | None
    direction: Direction
    audience: Audience
    channel: Channel
    address: str  # the customer's address
    org_address: str | None  # the org's number / sender
    body: str
    subject: str | None
    purpose: Purpose
    kind: MessageKind
    status: MessageStatus
    intent: Intent | None
    provider_id: str | None
    reply_text: str | None  # inbound: the replies given in the webhook's answer, as a JSON list
    agent_id: int | None
    enrollment_id: int | None
    not_before: datetime | None  # while sending: the lease's end
    claim_token: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None  # outbound: handed to the provider
    provider_status: str | None  # the provider's last delivery report (Twilio's MessageStatus)
    error_code: str | None  # the provider's error code with that report
    template_json: str | None  # a WhatsApp template message: {"name", "variables", "content_sid"}


@dataclass(slots=True, frozen=True)
class Note:
    """A note to employees (a message with audience `employee`) as one person's inbox shows it."""

    message: Message
    contact_name: str | None  # None: the note is about an address no contact owns
    read: bool  # by the person whose inbox it is


@dataclass(slots=True, frozen=True)
class Enrollment:
    id: int
    org_id: int
    contact_id: int
    flow_name: str
    flow_version: str
    pc: int
    status: EnrollmentStatus
    next_run_at: datetime | None
    event_json: str
    started_at: datetime
    ended_at: datetime | None
    end_reason: str | None

    @property
    def running(self) -> bool:
        return self.status in RUNNING


@dataclass(slots=True, frozen=True)
class FlowVersion:
    id: int
    name: str
    version: str
    source_file: str
    source: str
    loaded_at: datetime


@dataclass(slots=True, frozen=True)
class WebhookDelivery:
    id: int
    org_id: int
    enrollment_id: int | None
    url: str
    payload: str  # the JSON body, exactly as signed and sent
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime
    last_status: int | None  # the receiver's last HTTP status; None: no answer
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None
    endpoint_id: int | None  # the event endpoint it goes to; None: a flow's webhook step
    event_type: str | None
    event_id: str | None  # the `webhook-id` of an event (the same on every attempt and redelivery)
    ordering_key: str | None  # events with the same key go to their endpoint in order
    give_up_at: datetime | None  # an event is not tried after this (then failed); None: by attempt count


@dataclass(slots=True, frozen=True)
class EventEndpoint:
    id: int
    org_id: int
    url: str
    description: str
    event_types: str  # comma-separated
    active: bool
    secret_salt: str
    created_at: datetime
    removed_at: datetime | None

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(t for t in self.event_types.split(",") if t)


@dataclass(slots=True, frozen=True)
class WebhookAttempt:
    id: int
    delivery_id: int
    attempt: int
    attempted_at: datetime
    status_code: int | None
    error: str | None


@dataclass(frozen=True)
class SendWindow:
    """The sends an org's frequency caps may count: on these channels, at or after `since`."""

    channels: frozenset[Channel]
    since: datetime


ALL_CHANNELS = "all"  # a suppression of every channel


@dataclass(frozen=True)
class Suppression:
    address: str
    channel: str  # a channel's value, or "all"
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class ImportJob:
    id: int
    org_id: int
    agent_id: int | None
    kind: str
    status: str
    rows_total: int
    rows_done: int
    imported: int
    skipped: int
    rejected: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None
    header_json: str

    @property
    def header(self) -> list[str]:
        """The file's columns (for the rejects file)."""
        columns: list[str] = json.loads(self.header_json)
        return columns


@dataclass(frozen=True)
class ImportReject:
    line: int
    reason: str
    fields: list[str]
