"""Plain domain objects: the vocabulary every other layer speaks.

Nothing here does IO or reads the clock. Rows loaded from the database are turned into these
objects by the adapters; the consent machine fires its triggers on them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime


class Channel(enum.StrEnum):
    TEXT = "text"
    CALL = "call"
    EMAIL = "email"
    WHATSAPP = "whatsapp"
    CHAT = "chat"


class State(enum.StrEnum):
    UNKNOWN = "unknown"
    REQUESTED = "requested"
    OPTED_IN = "opted_in"
    OPTED_OUT = "opted_out"
    REAUTH_DUE = "reauth_due"


class Purpose(enum.StrEnum):
    CONVERSATIONAL = "conversational"
    TRANSACTIONAL = "transactional"
    MARKETING = "marketing"


class Mode(enum.StrEnum):
    """How an org runs one channel (see DESIGN.md, "Modes")."""

    CONSENT = "consent"
    DISCLAIMER = "disclaimer"
    AUTO = "auto"


class Intent(enum.StrEnum):
    OPT_OUT = "opt_out"
    OPT_IN = "opt_in"
    HELP = "help"
    OTHER = "other"


class ActorKind(enum.StrEnum):
    CUSTOMER = "customer"
    AGENT = "agent"
    SYSTEM = "system"
    INTEGRATION = "integration"  # another system acting for the business (a CRM's sync, a bulk import's API token)


class Trigger(enum.StrEnum):
    REQUEST_OPT_IN = "request_opt_in"
    ACCEPT = "accept"
    CONFIRM_PIN = "confirm_pin"
    RECORD_OPT_IN = "record_opt_in"
    REAUTHORIZE = "reauthorize"
    EXPIRE = "expire"
    OPT_OUT = "opt_out"
    LAPSE = "lapse"
    RESET = "reset"


class DomainError(Exception):
    """A request the rules refuse. `code` is stable and machine-readable; str() says why."""

    code = "domain_error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code:
            self.code = code


class TransitionRefused(DomainError):
    code = "transition_refused"


class InvalidInput(DomainError):
    code = "invalid_input"


class NotFound(DomainError):
    code = "not_found"


@dataclass(frozen=True)
class Actor:
    kind: ActorKind
    id: str | None = None  # agent id, or the customer's address, or the system job's name
    role: str | None = None  # an agent's role (agent, supervisor, admin): some changes need a supervisor

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.id}" if self.id else self.kind.value

    @property
    def for_business(self) -> bool:
        """An employee or an integration acting for the business: what they record about a
        consent is checked the same way (method, date, an opt-out only the customer reopens)."""
        return self.kind in (ActorKind.AGENT, ActorKind.INTEGRATION)


CUSTOMER = Actor(ActorKind.CUSTOMER)
SYSTEM = Actor(ActorKind.SYSTEM)


@dataclass
class Consent:
    """The consent of one (address, channel). The consent machine fires on this object.

    `awaiting_pin` marks the PIN step of `requested`: the customer said YES and the org asks
    for a PIN, so the consent stays `requested` until an agent confirms the code.
    """

    channel: Channel
    address: str
    state: State = State.UNKNOWN
    awaiting_pin: bool = False
    opted_in_at: datetime | None = None  # when the current consent was given (clock for reauth)
    requested_at: datetime | None = None
    opted_out_at: datetime | None = None
    method: str | None = None
    id: int | None = None
    contact_id: int | None = None
    org_id: int | None = None
    version: int = 0
    opt_out_confirmation_sent: bool = False
    pin_hash: str | None = None
    pin_expires_at: datetime | None = None
    pin_attempts: int = 0
    # The address cannot or must not get messages on this channel (`delivery.Undeliverable`:
    # bounced, complained, carrier_blocked, ...), whatever the state says; None: nothing against it.
    do_not_contact: str | None = None
    do_not_contact_at: datetime | None = None


@dataclass(frozen=True)
class TransitionRecord:
    """What one fired trigger did: the raw material of a ledger entry."""

    trigger: Trigger
    channel: Channel
    address: str
    from_state: State
    to_state: State
    actor: Actor
    occurred_at: datetime  # when the customer consented / opted out (may be in the past)
    recorded_at: datetime
    method: str | None = None
    evidence: str | None = None
    source_message_id: str | None = None
    awaiting_pin: bool = False


@dataclass(frozen=True)
class DndSettings:
    """Do-Not-Disturb of one contact: per channel, or everything."""

    all_channels: bool = False
    channels: frozenset[Channel] = field(default_factory=frozenset)

    def blocks(self, channel: Channel) -> bool:
        return self.all_channels or channel in self.channels
