"""What the repositories store and hand back: statuses as their enum's text, rows as records.

mypy (strict on domain/ and service_layer/) refuses a misspelt status member; these tests hold
the other end: every status the code writes, through the real handlers, dispatchers and
repositories, is stored as the plain text of a member (on SQLite and PostgreSQL, whose driver
would store a plain Enum by its name), and a stored text that is no member is refused on reading
with the column named, instead of travelling on as a string nobody checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

import pytest
from sqlalchemy import Engine, insert, select

from conftest import ORG_NUMBER, START, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import orm
from optflow.adapters.records import Reader
from optflow.adapters.webhook_poster import PostOutcome, WebhookPoster
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel
from optflow.domain.records import (
    Audience,
    DeliveryStatus,
    Direction,
    EnrollmentStatus,
    MessageStatus,
    Org,
)
from optflow.service_layer.webhook_dispatcher import WebhookDispatcher

PHONE = "+12125550111"
STRANGER = "+12125550199"


class _Answers(WebhookPoster):
    """A receiver that takes the first POST and fails every later one (no HTTP)."""

    def __init__(self) -> None:
        super().__init__("whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        self.posted = 0

    def post(self, url: str, webhook_id: str, at: datetime, body: bytes,
             secret_salt: str | None = None) -> PostOutcome:
        self.posted += 1
        return PostOutcome(200) if self.posted == 1 else PostOutcome(503, "HTTP 503")


def _stored(engine: Engine, column: object) -> set[object]:
    with engine.connect() as conn:
        return set(conn.execute(select(column).distinct()).scalars())  # type: ignore[call-overload]


def _texts(members: type[StrEnum]) -> set[str]:
    return {member.value for member in members}


def test_every_status_the_code_stores_is_the_text_of_a_member_of_its_enum(
        engine: Engine, clock: Clock, sender: RecordingSender) -> None:
    system = make_system(engine, clock, sender)
    org = new_org(system)
    agent = new_agent(system, org)
    actor = Actor(ActorKind.AGENT, str(agent.id), agent.role)
    contact = system.bus.handle(c.CreateContact(org, "Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "about your order", actor))  # held, request queued
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "YES", "SM1"))  # replied, released, note
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, STRANGER, ORG_NUMBER, "hello?", "SM2"))  # unassociated
    system.dispatcher.run(clock())  # sending, handed over, sent
    system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "one more thing", actor))  # queued
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SM3"))  # cancelled
    with system.bus.uow() as uow:
        enrollment = uow.enrollments.create(org, contact, "welcome_drip", "v1", {}, clock())
        removed = uow.enrollments.create(org, contact, "other_drip", "v1", {}, clock())
        uow.enrollments.pause(enrollment, "do not disturb")
        uow.enrollments.resume(enrollment, clock())
        uow.enrollments.end(enrollment, EnrollmentStatus.DONE, "completed", clock())
        for delivery in range(2):
            uow.webhook_deliveries.add(org, enrollment, f"https://example.com/hook/{delivery}", "{}", clock())
        uow.commit()
    system.bus.handle(c.RemoveEnrollment(org, contact, removed, actor))  # cancelled
    WebhookDispatcher(system.uows, _Answers()).run(clock())  # delivered, queued again

    statuses = _stored(engine, orm.messages.c.status)
    assert {"replied", "delivered", "unassociated", "sent", "cancelled"} <= statuses
    for column, members in ((orm.messages.c.status, MessageStatus), (orm.messages.c.direction, Direction),
                            (orm.messages.c.audience, Audience), (orm.enrollments.c.status, EnrollmentStatus),
                            (orm.webhook_deliveries.c.status, DeliveryStatus)):
        stored = _stored(engine, column)
        assert stored and stored <= _texts(members), (column, stored)
        assert {type(text) for text in stored} == {str}, "stored as text, not as an enum object or its name"
    assert _stored(engine, orm.webhook_deliveries.c.status) == {"delivered", "queued"}
    assert {"done", "cancelled"} <= _stored(engine, orm.enrollments.c.status)

    with system.bus.uow(read_only=True) as uow:
        messages = [*uow.messages.for_contact(org, contact), *uow.messages.unassociated(org)]
        enrollments = uow.enrollments.for_contact(contact, tuple(EnrollmentStatus))
        deliveries = uow.webhook_deliveries.for_enrollment(enrollment)
    assert {message.status for message in messages} == statuses
    assert all(message.status is MessageStatus(message.status) and message.direction is Direction(message.direction)
               and message.audience is Audience(message.audience) for message in messages)
    assert all(row.status is EnrollmentStatus(row.status) for row in enrollments)
    assert [row.status for row in deliveries] == [DeliveryStatus.DELIVERED, DeliveryStatus.QUEUED]


def test_a_stored_status_that_is_no_member_is_refused_with_its_column_named(
        sqlite_engine: Engine, clock: Clock, sender: RecordingSender) -> None:
    system = make_system(sqlite_engine, clock, sender)
    org = new_org(system)
    with sqlite_engine.begin() as conn:
        message_id = conn.execute(insert(orm.messages).values(
            org_id=org, direction="out", channel="text", address=PHONE, status="qeued", created_at=START,
        )).inserted_primary_key[0]  # type: ignore[index]
    with system.bus.uow(read_only=True) as uow, pytest.raises(ValueError, match=r"messages\.status holds 'qeued'"):
        uow.messages.get(message_id)


def test_a_record_whose_fields_are_not_its_tables_columns_in_order_is_refused() -> None:
    @dataclass(slots=True, frozen=True)
    class Reordered:
        name: str
        id: int
        parent_id: int | None
        settings_json: str
        created_at: datetime

    with pytest.raises(TypeError, match="are not the columns of orgs"):
        Reader(orm.orgs, Reordered)
    assert Reader(orm.orgs, Org)((1, "Acme", None, "{}", START)) == Org(1, "Acme", None, "{}", START)
