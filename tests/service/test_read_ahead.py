"""A batch reads its senders' contacts, consents and enrolments ahead, in a few statements
(`UnitOfWork.read_ahead`); what the batch changes before a message is handled is never hidden
from it by what was read ahead, on either database."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import Engine, select

from conftest import ORG_NUMBER, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import orm
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain import events as ev
from optflow.domain.model import Actor, ActorKind, Channel, State
from optflow.service_layer.messagebus import Handled

PHONE, OTHER_PHONE = "+14155552671", "+14155552672"


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    return make_system(engine, clock, sender)


def text(org: int, body: str, sid: str, phone: str = PHONE) -> c.ReceiveInbound:
    return c.ReceiveInbound(Channel.TEXT, phone, ORG_NUMBER, body, sid, org_id=org)


def contact_with(system: System, org: int, *phones: str, opted_in: bool = True) -> int:
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")
    contact: int = system.bus.handle(c.CreateContact(org, name="Sam", phones=phones)).contact_id
    if opted_in:
        for phone in phones:
            system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="paper_form",
                                            address=phone))
    return contact


def results(handled: list[Handled]) -> list[Any]:
    for done in handled:
        assert done.error is None, done.error
    return [done.result for done in handled]


def test_a_second_message_of_the_sender_sees_what_the_first_changed(system: System) -> None:
    org = new_org(system)
    contact_with(system, org, PHONE)
    stop, help_ = results(system.bus.handle_batch([text(org, "alto por favor", "SM1"), text(org, "HELP", "SM2")]))
    assert stop.state is State.OPTED_OUT
    assert help_.state is State.OPTED_OUT  # the consent as the STOP left it
    assert "Responda" in help_.replies[0] or "responda" in help_.replies[0]  # the language the STOP taught


def test_an_opt_out_of_every_channel_reaches_a_later_message_from_the_contacts_other_number(
        system: System) -> None:
    org = new_org(system, stop_applies_to_all_channels=True)
    contact_with(system, org, PHONE, OTHER_PHONE)
    first, second = results(system.bus.handle_batch([text(org, "STOP", "SM1"),
                                                     text(org, "When is my appointment?", "SM2", OTHER_PHONE)]))
    assert first.state is State.OPTED_OUT
    # The second number's consent as the STOP left it: opted out, so a customer writing again is
    # asked for consent first (read ahead as it was, opted in, the message would simply pass).
    assert second.state is State.REQUESTED
    with system.engine.connect() as conn:
        entries = conn.execute(select(orm.ledger.c.from_state, orm.ledger.c.to_state)
                               .where(orm.ledger.c.address == OTHER_PHONE).order_by(orm.ledger.c.seq)).all()
    assert entries[-2][1] == "opted_out" and entries[-1] == ("opted_out", "requested")


def test_what_a_failed_message_wrote_is_not_what_the_next_one_reads(system: System) -> None:
    org = new_org(system)
    contact_with(system, org, PHONE, opted_in=False)

    def breaks_on_opt_ins(uow: Any, event: ev.ConsentChanged, now: Any) -> None:
        if event.to_state is State.OPTED_IN:
            raise RuntimeError("a flow broke on the consent change")

    system.services.subscribe(ev.ConsentChanged, breaks_on_opt_ins)
    yes, stop = system.bus.handle_batch([text(org, "YES", "SM1"), text(org, "STOP", "SM2")])
    assert yes.error is not None  # its consent was written, then rolled back with it
    assert stop.error is None and stop.result.state is State.OPTED_OUT
    with system.engine.connect() as conn:
        entries = conn.execute(select(orm.ledger.c.from_state, orm.ledger.c.to_state)
                               .where(orm.ledger.c.address == PHONE).order_by(orm.ledger.c.seq)).all()
    assert entries[-1] == ("unknown", "opted_out")  # not from the opt-in that was rolled back
