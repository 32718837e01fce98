"""Rows of the database turned into the domain's records (`domain/records.py`).

A record is built positionally from the driver's row, whose values come in the table's column
order: no dict per row, one dataclass call. Columns holding an enum's text are looked up in a
dict of its members (a fraction of calling the Enum class). Each reader checks once, when it is
built, that its record's fields are its table's columns in order.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from sqlalchemy import Table

from ..domain.model import Channel, Intent, Purpose
from ..domain.policy import MessageKind
from ..domain.records import (
    Address,
    Agent,
    Audience,
    Contact,
    DeliveryStatus,
    Direction,
    Enrollment,
    EnrollmentStatus,
    EventEndpoint,
    FlowVersion,
    Message,
    MessageStatus,
    Org,
    WebhookAttempt,
    WebhookDelivery,
)
from . import orm

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


class Reader(Generic[R]):
    """Builds `record` from a row of `table` (a full-row SELECT): `reader(values)`."""

    def __init__(self, table: Table, record: type[R], enums: Mapping[str, type[enum.Enum]] | None = None) -> None:
        columns = tuple(table.c.keys())
        fields = tuple(field.name for field in dataclasses.fields(record))
        if columns != fields:
            raise TypeError(f"{record.__name__}'s fields {fields} are not the columns of {table.name}: {columns}")
        self.table = table
        self.record = record
        self._enums = tuple((columns.index(name), name, {member.value: member for member in members})
                            for name, members in (enums or {}).items())

    def __call__(self, values: Sequence[Any]) -> R:
        if self._enums:
            values = list(values)
            for position, name, members in self._enums:
                value = values[position]
                if value is not None:
                    try:
                        values[position] = members[value]
                    except KeyError:
                        raise ValueError(f"{self.table.name}.{name} holds {value!r}, which is none of "
                                         f"{', '.join(map(repr, members))}") from None
        return self.record(*values)


ORG = Reader(orm.orgs, Org)
AGENT = Reader(orm.agents, Agent)
CONTACT = Reader(orm.contacts, Contact)
ADDRESS = Reader(orm.addresses, Address)
MESSAGE = Reader(orm.messages, Message, {
    "direction": Direction, "audience": Audience, "channel": Channel, "purpose": Purpose, "kind": MessageKind,
    "status": MessageStatus, "intent": Intent,
})
ENROLLMENT = Reader(orm.enrollments, Enrollment, {"status": EnrollmentStatus})
FLOW_VERSION = Reader(orm.flow_versions, FlowVersion)
WEBHOOK_DELIVERY = Reader(orm.webhook_deliveries, WebhookDelivery, {"status": DeliveryStatus})
EVENT_ENDPOINT = Reader(orm.event_endpoints, EventEndpoint)
WEBHOOK_ATTEMPT = Reader(orm.webhook_attempts, WebhookAttempt)
