"""Re-authorisation of an aged consent when an agent writes (issue 12, item 8: "Re-authorisation").

Collect!'s and ACE's contact-control rules: a text consent older than the org's period is due for
re-authorisation. An agent's message then waits, and the customer is asked to renew (the
re-authorisation request, not a fresh opt-in request): the consent stays `reauth_due`, so either
the customer's YES or the agent's record of a spoken renewal renews it, and the held message goes."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ORG_NUMBER, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import db
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, State
from optflow.service_layer.sweeps import sweep_consents

PHONE = "+14155552671"
REAUTH_WORDS = "it has been a while"


@pytest.fixture
def aged(tmp_path: Path, clock: Clock, sender: RecordingSender) -> tuple[System, int, int, Actor]:
    """A contact whose text consent is due for re-authorisation (no flows: only the agent acts)."""
    flows = tmp_path / "no-flows"
    flows.mkdir()
    engine = db.make_engine(f"sqlite:///{tmp_path / 'reauth.db'}")
    db.create_schema(engine)
    system = make_system(engine, clock, sender, flows_dir=flows)
    org = new_org(system, reauth_days={"text": 180})
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    clock.advance(days=181)
    assert sweep_consents(system.uows, system.services, clock()).expired == 1
    return system, org, contact, agent


def _state(system: System, org: int) -> State:
    with system.bus.uow() as uow:
        return uow.consents.get(org, PHONE, Channel.TEXT).state


def _write(system: System, org: int, contact: int, agent: Actor, body: str) -> str:
    result = system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, body, agent))
    assert result.status == "held", result
    return str(result.detail)


def test_reauth_an_agents_message_asks_for_renewal_and_goes_after_the_agent_records_it(
        aged: tuple[System, int, int, Actor], sender: RecordingSender, clock: Clock) -> None:
    system, org, contact, agent = aged
    detail = _write(system, org, contact, agent, "Your car is ready")
    assert "re-authorisation request was sent" in detail
    assert _state(system, org) is State.REAUTH_DUE, "a fresh opt-in request would have moved it to requested"
    _write(system, org, contact, agent, "We close at 6")  # a second message asks nothing more
    system.dispatcher.run(clock())
    assert len(sender.to(PHONE)) == 1 and REAUTH_WORDS in sender.to(PHONE)[0].body

    # The customer renews on the phone; the agent records it: both held messages go.
    result = system.bus.handle(c.Reauthorize(org, contact, Channel.TEXT, agent, method="verbal",
                                             evidence="renewed on the call"))
    assert result.state is State.OPTED_IN
    system.dispatcher.run(clock())
    assert [m.body for m in sender.to(PHONE)][1:] == ["Your car is ready", "We close at 6"]


def test_reauth_an_agents_message_goes_after_the_customers_yes(
        aged: tuple[System, int, int, Actor], sender: RecordingSender, clock: Clock) -> None:
    system, org, contact, agent = aged
    _write(system, org, contact, agent, "Your car is ready")
    system.dispatcher.run(clock())
    assert REAUTH_WORDS in sender.to(PHONE)[-1].body
    reply = system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "YES", "SM" + "7" * 32))
    assert reply.state is State.OPTED_IN
    clock.advance(seconds=1)
    system.dispatcher.run(clock())
    assert sender.to(PHONE)[-1].body == "Your car is ready"
    with system.bus.uow() as uow:
        assert uow.ledger.entries(org)[-1]["trigger"] == "reauthorize"
