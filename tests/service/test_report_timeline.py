"""Consent counts over time (`service_layer/report_timeline.py` on `adapters/report_series.py`),
on SQLite and PostgreSQL: counted per UTC day from the ledger, as the consent report counts."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from sqlalchemy import Engine

from conftest import ORG_NUMBER, START, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, InvalidInput, Mode
from optflow.service_layer.report_timeline import timeline

DAY = START.date()  # Monday 23 November 2026


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    return make_system(engine, clock, sender)


@pytest.fixture
def org(system: System, clock: Clock) -> int:
    """Day 0: two opt-in requests, one answered YES; a web-form opt-in by email. Day 2: a STOP
    and a second STOP (not a second opt-out). Email runs in disclaimer mode."""
    org = new_org(system, modes={"email": "disclaimer"})
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")
    sam = system.bus.handle(c.CreateContact(org, name="Sam", phones=("+14155552671",),
                                            emails=("sam@example.com",))).contact_id
    kim = system.bus.handle(c.CreateContact(org, name="Kim", phones=("+14155552672",))).contact_id
    system.bus.handle(c.RequestOptIn(org, sam, Channel.TEXT, agent))
    system.bus.handle(c.RequestOptIn(org, kim, Channel.TEXT, agent))
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, "+14155552671", ORG_NUMBER, "YES", "SM1"))
    system.bus.handle(c.RecordOptIn(org, sam, Channel.EMAIL, agent, method="web_form"))
    clock.advance(days=2)
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, "+14155552671", ORG_NUMBER, "STOP", "SM2"))
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, "+14155552671", ORG_NUMBER, "STOP", "SM3"))
    return org


def of(system: System, org: int, first: date, last: date, **kw: object):  # type: ignore[no-untyped-def]
    with system.bus.uow(read_only=True) as uow:
        return timeline(uow, org, first, last, **kw)  # type: ignore[arg-type]


def test_counts_per_day_for_every_channel(system: System, org: int) -> None:
    t = of(system, org, DAY - timedelta(days=1), DAY + timedelta(days=3))
    assert t.bucket == "day" and t.starts[0] == DAY - timedelta(days=1) and len(t.starts) == 5
    assert t.series == {"opt_ins": [0, 2, 0, 0, 0], "opt_outs": [0, 0, 0, 1, 0], "requests": [0, 2, 0, 0, 0],
                        "reauthorizations": [0, 0, 0, 0, 0]}
    assert t.rows()[0] == ["period_start", "opt_ins", "opt_outs", "requests", "reauthorizations"]
    assert t.rows()[2] == [DAY.isoformat(), 2, 0, 2, 0]
    assert "web_form" in t.methods


def test_by_channel_method_and_mode(system: System, org: int) -> None:
    first, last = DAY, DAY + timedelta(days=2)
    assert of(system, org, first, last, channel=Channel.EMAIL).totals() == {
        "opt_ins": 1, "opt_outs": 0, "requests": 0, "reauthorizations": 0}
    assert of(system, org, first, last, channel=Channel.TEXT).totals()["opt_ins"] == 1
    assert of(system, org, first, last, method="web_form").totals()["opt_ins"] == 1
    assert of(system, org, first, last, mode=Mode.DISCLAIMER).totals() == of(
        system, org, first, last, channel=Channel.EMAIL).totals()
    assert of(system, org, first, last, mode=Mode.CONSENT).totals()["opt_outs"] == 1


def test_a_long_period_is_counted_per_week_and_other_orgs_are_not_counted(system: System, org: int) -> None:
    t = of(system, org, DAY - timedelta(days=100), DAY + timedelta(days=10))
    assert t.bucket == "week" and len(t.starts) == 16
    assert t.totals() == {"opt_ins": 2, "opt_outs": 1, "requests": 2, "reauthorizations": 0}
    other = new_org(system, "Other", "+12025550177")
    assert of(system, other, DAY, DAY + timedelta(days=3)).totals()["requests"] == 0


def test_a_backwards_or_too_long_period_is_refused(system: System, org: int) -> None:
    with pytest.raises(InvalidInput, match="starts"):
        of(system, org, DAY, DAY - timedelta(days=1))
    with pytest.raises(InvalidInput, match="at most"):
        of(system, org, DAY - timedelta(days=2000), DAY)
