"""What customers and employees read before anyone words it (issue 12, item 8: "Customer-facing
defaults"): a new org's program name and HELP contact, the email opt-in request, the employee's
note, and how often one address is asked for its consent."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import ORG_NUMBER, Clock, RecordingSender, new_agent, new_org, run_cli
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, State, TransitionRefused
from optflow.service_layer import admin

PHONE = "+14155552671"
EMAIL = "sam@example.com"


def _agent(system: System, org: int) -> Actor:
    return Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")


def _notes(system: System, org: int) -> list[str]:
    with system.bus.uow() as uow:
        contact = uow.contacts.at_address(org, PHONE)
        assert contact is not None
        return [m.body for m in uow.messages.for_contact(org, contact.id, limit=50) if m.audience.value == "employee"]


def test_defaults_a_new_org_names_its_program_and_help_contact(system: System) -> None:
    created = admin.ensure_default_setup(system.uows, system.clock(), "Bayside Motors", ORG_NUMBER)
    assert created is not None
    reply = system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "HELP", "SM" + "3" * 32))
    assert "Bayside Motors messages" in reply.replies[0] and f"call or text {ORG_NUMBER}" in reply.replies[0]
    assert "optflow messages" not in reply.replies[0] and "reply HELP" not in reply.replies[0]


def test_defaults_init_takes_the_program_name_and_help_contact(tmp_path: Path) -> None:
    init = run_cli(tmp_path, "init", "--org-name", "Bayside Motors", "--program-name", "Bayside service alerts",
                   "--help-contact", "help@bayside.example")
    assert init.returncode == 0, init.stderr
    shown = run_cli(tmp_path, "orgs", "show", "--org", "1")
    assert shown.returncode == 0, shown.stderr
    assert '"program_name": "Bayside service alerts"' in shown.stdout
    assert '"help_contact": "help@bayside.example"' in shown.stdout


def test_defaults_an_email_opt_in_request_is_worded_for_email(system: System, sender: RecordingSender) -> None:
    org = new_org(system)
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,), emails=(EMAIL,))).contact_id
    agent = _agent(system, org)
    system.bus.handle(c.RequestOptIn(org, contact, Channel.EMAIL, agent))
    system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
    system.dispatcher.run(system.clock())
    by_email, by_text = sender.to(EMAIL)[0].body, sender.to(PHONE)[0].body
    assert "by email" in by_email and "Msg & data rates" not in by_email
    assert "Msg & data rates may apply" in by_text


def test_defaults_the_employee_note_says_held_only_when_a_message_is(system: System) -> None:
    org = new_org(system)
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    agent = _agent(system, org)
    system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
    assert _notes(system, org) == ["Opt-in request sent to Sam by text."]
    other = system.bus.handle(c.CreateContact(org, name="Kim", phones=("+14155552672",))).contact_id
    result = system.bus.handle(c.SendMessage(org, other, Channel.TEXT, "Your car is ready", agent))
    assert result.status == "held"
    with system.bus.uow() as uow:
        notes = [m.body for m in uow.messages.for_contact(org, other, limit=50) if m.audience.value == "employee"]
    assert len(notes) == 1 and "Your message is held" in notes[0]


def test_defaults_repeated_opt_in_requests_to_one_address_are_limited(system: System, clock: Clock,
                                                                      sender: RecordingSender) -> None:
    org = new_org(system)
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    agent = _agent(system, org)
    system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
    for _ in range(3):
        clock.advance(minutes=5)
        with pytest.raises(TransitionRefused) as refused:
            system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
        assert refused.value.code == "request_too_soon"
    clock.advance(hours=24)
    assert system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent)).state is State.REQUESTED
    system.dispatcher.run(clock())
    assert len(sender.to(PHONE)) == 2
