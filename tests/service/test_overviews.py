"""The reads behind the console's supervisor and flows pages (`service_layer/overviews.py` on
`adapters/overviews.py`), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine

from conftest import START, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel
from optflow.service_layer.overviews import flows_overview, outbound_queue

PHONE, OTHER, LEE = "+12125550111", "+12125550122", "+12125550144"


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    return make_system(engine, clock, sender)


def test_the_outbound_queue_holds_held_deferred_and_failed_messages_with_their_reasons(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    org = new_org(system)
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")
    sam = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    kim = system.bus.handle(c.CreateContact(org, name="Kim", phones=(OTHER,))).contact_id
    lee = system.bus.handle(c.CreateContact(org, name="Lee", phones=(LEE,))).contact_id
    system.bus.handle(c.SendMessage(org, sam, Channel.TEXT, "held one", agent))  # consent mode: held
    for contact in (kim, lee):
        system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="web_form"))
    clock.now = datetime(2026, 11, 24, 7, 0, tzinfo=UTC)  # 02:00 in New York: quiet hours
    system.bus.handle(c.SendMessage(org, kim, Channel.TEXT, "deferred one", agent))

    with system.bus.uow(read_only=True) as uow:
        queue = {w.message.body: w for w in outbound_queue(uow, org, clock.now)}
    assert set(queue) == {"held one", "deferred one"}
    assert queue["held one"].state == "held" and "YES" in queue["held one"].reason
    assert queue["held one"].contact_name == "Sam"
    deferred = queue["deferred one"]
    assert deferred.state == "deferred" and "quiet hours" in deferred.reason  # the policy's answer now
    assert deferred.message.not_before == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)

    clock.now = START + timedelta(days=1)
    system.bus.handle(c.SendMessage(org, lee, Channel.TEXT, "failing one", agent))
    sender.unsubscribed.add(LEE)  # the carrier refuses it
    system.dispatcher.run(clock.now)
    with system.bus.uow(read_only=True) as uow:
        later = {w.message.body: w for w in outbound_queue(uow, org, clock.now)}
    assert set(later) == {"held one", "failing one"}  # the deferred one went at 08:00
    assert later["failing one"].state == "failed" and later["failing one"].reason
    with system.bus.uow(read_only=True) as uow:
        assert outbound_queue(uow, new_org(system, "Other", "+12025550177"), clock.now) == []


def test_the_flows_overview_counts_contacts_at_each_step(system: System) -> None:
    org = new_org(system)
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")
    for n, phone in enumerate((PHONE, OTHER)):
        contact = system.bus.handle(c.CreateContact(org, name=f"C{n}", phones=(phone,))).contact_id
        system.bus.handle(c.RecordEvent(org, "lead.created", contact, {}))
    paused = system.bus.handle(c.CreateContact(org, name="P", phones=("+12125550133",))).contact_id
    system.bus.handle(c.RecordEvent(org, "lead.created", paused, {}))
    system.bus.handle(c.SetDnd(org, paused, agent, on=True, channels=(Channel.TEXT,)))

    with system.bus.uow(read_only=True) as uow:
        overview = {flow.name: flow for flow in flows_overview(uow, system.flows, org)}
    assert set(overview) == {"welcome_drip", "payment_plan_opt_in", "reauth_reminder", "discontinued"}
    drip = overview["welcome_drip"]
    assert drip.trigger == "event lead.created" and drip.purpose == "marketing" and drip.channels == ["email", "text"]
    [version] = drip.versions
    assert version.current and version.loads and version.version == drip.version
    assert [(s.label, s.active, s.paused) for s in version.steps] == [("texts_if_opted_in", 2, 1)]
    assert drip.running == 3 and overview["discontinued"].versions == []
    assert overview["discontinued"].trigger == "event pipeline.stage_changed when stage = discontinued"
    with system.bus.uow(read_only=True) as uow:
        assert len(uow.overviews.running_in_flow(org, "welcome_drip")) == 3
        other = new_org(system, "Other", "+12025550177")
        assert all(not f.versions for f in flows_overview(uow, system.flows, other))
