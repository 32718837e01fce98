"""Quiet hours through the whole stack with the real system clock frozen by freezegun, on the
days New York changes its clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from freezegun import freeze_time
from sqlalchemy import Engine

from conftest import REPO, RecordingSender, new_org
from optflow.bootstrap import bootstrap, utc_now
from optflow.config import Config
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, Purpose

NY = "+12125550100"


@pytest.mark.parametrize(("frozen", "expected_release"), [
    # 07:30 EDT on Sunday 1 Nov 2026 (clocks fall back at 02:00): the window opens at 08:00 EST.
    ("2026-11-01T11:30:00Z", datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
    # 07:30 EST on Sunday 14 Mar 2027 (clocks spring forward at 02:00): opens at 08:00 EDT.
    ("2027-03-14T11:30:00Z", datetime(2027, 3, 14, 12, 0, tzinfo=UTC)),
    # 21:30 EST the evening before the spring change: opens at 08:00 EDT the next morning.
    ("2027-03-14T02:30:00Z", datetime(2027, 3, 14, 12, 0, tzinfo=UTC)),
])
def test_a_message_before_the_window_waits_for_eight_local(sqlite_engine: Engine, frozen: str,
                                                           expected_release: datetime) -> None:
    sender = RecordingSender()
    system = bootstrap(Config(database_url=str(sqlite_engine.url), flows_dir=REPO / "flows", secret="s"),
                       clock=utc_now, sender=sender, engine=sqlite_engine)
    with freeze_time(frozen):
        org = new_org(system, "Collections", "+12025550123", preset="debt_collection")
        contact = system.bus.handle(c.CreateContact(org, phones=(NY,))).contact_id
        agent = Actor(ActorKind.AGENT, "1")
        system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
        result = system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Your payment is due",
                                                 agent, purpose=Purpose.TRANSACTIONAL))
        assert result.status == "deferred" and "quiet hours" in (result.detail or "")
        assert system.dispatcher.run(utc_now()).sent == 0
    with freeze_time((expected_release - timedelta(minutes=1)).isoformat()):
        assert system.dispatcher.run(utc_now()).sent == 0, "not a minute before 08:00 local"
    with freeze_time(expected_release.isoformat()):
        assert system.dispatcher.run(utc_now()).sent == 1
    assert sender.to(NY)[0].body == "Your payment is due"


def test_the_debt_collection_preset_caps_calls_at_seven_in_seven_days(system, clock) -> None:  # type: ignore[no-untyped-def]
    org = new_org(system, "Collections", "+12025550123", preset="debt_collection")
    contact = system.bus.handle(c.CreateContact(org, phones=(NY,))).contact_id
    agent = Actor(ActorKind.AGENT, "1")
    system.bus.handle(c.RecordOptIn(org, contact, Channel.CALL, agent, method="verbal"))
    first = clock()
    for day in range(7):  # one call a day at 13:00 in New York, days 0 to 6
        if day:
            clock.advance(days=1)
        assert system.bus.handle(c.SendMessage(org, contact, Channel.CALL, "call", agent)).status == "queued"
        assert system.dispatcher.run(clock()).sent == 1
    clock.advance(hours=2)
    eighth = system.bus.handle(c.SendMessage(org, contact, Channel.CALL, "call", agent))
    assert eighth.status == "deferred" and "7" in (eighth.detail or "")
    with system.bus.uow() as uow:
        row = uow.messages.get(eighth.message_id)
    assert row is not None and row.not_before == first + timedelta(days=7)
