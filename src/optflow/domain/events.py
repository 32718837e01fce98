"""Domain events: facts the service layer announces after a change, for whoever subscribes.

Handlers raise them into the unit of work (`uow.events`); the message bus hands them, in the same
transaction, to the subscribers that bootstrap registered (the flow engine). The handlers
therefore know nothing of flows, and flows react to consent changes without being called by
name. (The consent events sent to CRMs are made from the ledger entries instead, which carry
their sequence number and are written by every door: see `domain/consent_events.py`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .model import Channel, State


@dataclass(frozen=True)
class Event:
    org_id: int
    contact_id: int


@dataclass(frozen=True)
class ConsentChanged(Event):
    """A consent moved from one state to another (not raised for a repeat of the same state)."""

    channel: Channel
    address: str
    from_state: State
    to_state: State
    at: datetime


@dataclass(frozen=True)
class ChannelsBlocked(Event):
    """Nothing more may go to the contact on `channels` (None: on any channel): an opt-out or
    Do-Not-Disturb. `pause` (DND) holds enrolments until the block is lifted; otherwise the
    enrolments that have nothing left to send on an open channel end."""

    channels: frozenset[Channel] | None
    reason: str
    at: datetime
    pause: bool = False


@dataclass(frozen=True)
class ChannelsUnblocked(Event):
    """Do-Not-Disturb was lifted on some channels."""

    at: datetime


@dataclass(frozen=True)
class DndChanged(Event):
    from_label: str
    to_label: str
    at: datetime


@dataclass(frozen=True)
class MarketingChanged(Event):
    allowed: bool
    at: datetime


@dataclass(frozen=True)
class CustomerReplied(Event):
    """An ordinary message from the customer (not STOP, YES or HELP, which have their own meaning)."""

    channel: Channel
    text: str
    at: datetime


@dataclass(frozen=True)
class BusinessEvent(Event):
    """Something happened to the contact that flows may start or end on (`contact.created`, a
    payment plan opened, a deal's stage changed)."""

    name: str
    at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)
