"""ACE's opt-in paths in an org that asks for a PIN, and its auto opt-in (issue 12, item 8: "ACE").

ACE: an agent's request is answered YES and then the PIN the customer reads to the agent; a
payment plan's request and a supervisor's link of a number that wrote in are answered YES alone
(no agent waits for a PIN there), unless the org asks for a PIN on those paths too. Business
types allowed to auto opt in have every phone opted in as it is stored, added later too."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from conftest import ORG_NUMBER, Clock, new_agent, new_org
from optflow.adapters import orm
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, State

PHONE = "+14155552671"
STRANGER = "+14155550199"
YES_SIDS = iter(f"SM{n:032x}" for n in range(1000, 2000))


def _yes(system: System, frm: str) -> Any:
    return system.bus.handle(c.ReceiveInbound(Channel.TEXT, frm, ORG_NUMBER, "YES", next(YES_SIDS)))


def _supervisor(system: System, org: int) -> Actor:
    return Actor(ActorKind.AGENT, str(new_agent(system, org, role="supervisor", name="Sue").id), "supervisor")


def _link_a_stranger(system: System, org: int) -> None:
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, STRANGER, ORG_NUMBER, "hello? about my bill", "SM" + "5" * 32))
    with system.engine.connect() as conn:
        message_id = conn.execute(select(orm.messages.c.id).where(orm.messages.c.status == "unassociated")).scalar()
    contact = system.bus.handle(c.CreateContact(org, name="New")).contact_id
    system.bus.handle(c.LinkUnassociated(org, int(message_id or 0), contact, _supervisor(system, org)))


def _payment_plan(system: System, org: int) -> None:
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.RecordEvent(org, "payment_plan.created", contact))


def test_ace_a_supervisors_link_opts_in_on_yes_alone_in_a_pin_org(system: System) -> None:
    org = new_org(system, pin_required=True)
    _link_a_stranger(system, org)
    reply = _yes(system, STRANGER)
    assert reply.state is State.OPTED_IN, "no agent waits for a PIN after a supervisor's link"
    assert "Reply HELP for help" in reply.replies[0]


def test_ace_a_payment_plans_request_opts_in_on_yes_alone_in_a_pin_org(system: System) -> None:
    org = new_org(system, pin_required=True)
    _payment_plan(system, org)
    reply = _yes(system, PHONE)
    assert reply.state is State.OPTED_IN


def test_ace_an_agents_own_request_still_asks_for_the_pin(system: System) -> None:
    org = new_org(system, pin_required=True)
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
    reply = _yes(system, PHONE)
    assert reply.state is State.REQUESTED and "123456" in reply.replies[0]


def test_ace_an_org_may_ask_for_the_pin_on_those_paths_too(system: System) -> None:
    org = new_org(system, pin_required=True, pin_paths=["agent", "supervisor_link", "flow"])
    _payment_plan(system, org)
    assert _yes(system, PHONE).state is State.REQUESTED
    _link_a_stranger(system, org)
    assert _yes(system, STRANGER).state is State.REQUESTED


def test_ace_auto_opt_in_covers_a_phone_added_later(system: System, clock: Clock) -> None:
    org = new_org(system, modes={"text": "auto", "call": "auto"}, business_type="first_party_servicing")
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.UpdateContact(org, contact, add_phones=(STRANGER,)))
    with system.bus.uow() as uow:
        added = {ch: uow.consents.get(org, STRANGER, ch) for ch in (Channel.TEXT, Channel.CALL)}
    assert {ch: (k.state, k.method) for ch, k in added.items()} == {
        Channel.TEXT: (State.OPTED_IN, "auto"), Channel.CALL: (State.OPTED_IN, "auto")}
