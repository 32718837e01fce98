"""Employees' inboxes (`service_layer/inbox.py`): each note reaches the person it is about, with an
unread count per person. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from conftest import ORG_NUMBER, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, InvalidInput, NotFound
from optflow.service_layer import inbox as inboxes

PHONE = "+14155552671"
STRANGER = "+14155550199"


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    return make_system(engine, clock, sender)


def sms(system: System, body: str, sid: str, frm: str = PHONE) -> object:
    return system.bus.handle(c.ReceiveInbound(Channel.TEXT, frm, ORG_NUMBER, body, sid))


def inbox_of(system: System, org: int, agent_id: int, **kw: object) -> inboxes.Inbox:
    with system.bus.uow(read_only=True) as uow:
        return inboxes.inbox(uow, org, agent_id, **kw)  # type: ignore[arg-type]


def mark_read(system: System, org: int, agent_id: int, ids: list[int] | None) -> int:
    with system.bus.uow() as uow:
        count = inboxes.mark_read(uow, org, agent_id, ids, system.clock())
        uow.commit()
    return count


def test_the_employee_whose_message_was_held_gets_the_notes_and_an_unread_count(system: System) -> None:
    """Movius in consent mode: Alice's first message is held and the opt-in request goes out; the
    customer's YES releases it. Both notes are in Alice's inbox, none in Bob's."""
    org = new_org(system)
    alice, bob = new_agent(system, org, name="Alice").id, new_agent(system, org, name="Bob").id
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    held = system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Your quote is ready",
                                           Actor(ActorKind.AGENT, str(alice), "agent")))
    assert held.status == "held"
    sms(system, "YES", "SM1")

    mine = inbox_of(system, org, alice)
    assert [n.message.body for n in mine.notes] == [
        "Sam opted in to text messages.",
        "Opt-in request sent to Sam by text. Your message is held and will be delivered once they reply YES.",
    ]
    assert [n.contact_name for n in mine.notes] == ["Sam", "Sam"]
    assert mine.unread == 2 and not any(n.read for n in mine.notes)
    assert inbox_of(system, org, bob).notes == [] and inbox_of(system, org, bob).unread == 0

    newest = mine.notes[0].message.id
    assert mark_read(system, org, bob, [newest]) == 0  # not Bob's note
    assert mark_read(system, org, alice, [newest]) == 1
    assert mark_read(system, org, alice, [newest]) == 0  # read once
    after = inbox_of(system, org, alice)
    assert after.unread == 1 and [n.read for n in after.notes] == [True, False]
    assert [n.message.id for n in inbox_of(system, org, alice, unread_only=True).notes] == [after.notes[1].message.id]
    assert mark_read(system, org, alice, None) == 1
    assert inbox_of(system, org, alice).unread == 0


def test_a_held_customer_message_reaches_the_person_who_last_wrote_to_them(system: System) -> None:
    org = new_org(system)
    alice, bob = new_agent(system, org, name="Alice").id, new_agent(system, org, name="Bob").id
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, Actor(ActorKind.AGENT, str(bob), "agent")))
    sms(system, "Is the blue car still for sale?", "SM1")  # held until the YES
    sms(system, "yes", "SM2")
    [note, _request_sent] = inbox_of(system, org, bob).notes
    assert "The held message is delivered now: Is the blue car still for sale?" in note.message.body
    assert inbox_of(system, org, alice).notes == []


def test_a_note_about_nobody_in_particular_is_for_everyone_and_read_by_each(system: System) -> None:
    """A STOP from a number nobody wrote to: the note is for every person of the org."""
    org = new_org(system)
    alice, bob = new_agent(system, org, name="Alice").id, new_agent(system, org, name="Bob").id
    system.bus.handle(c.CreateContact(org, name="Kim", phones=(STRANGER,)))
    sms(system, "STOP", "SM1", frm=STRANGER)
    [for_alice] = inbox_of(system, org, alice).notes
    [for_bob] = inbox_of(system, org, bob).notes
    assert for_alice.message.id == for_bob.message.id and "Kim opted out of text messages" in for_alice.message.body
    assert mark_read(system, org, alice, None) == 1
    assert inbox_of(system, org, alice).unread == 0 and inbox_of(system, org, bob).unread == 1


def test_another_orgs_person_and_bad_pages_are_refused(system: System) -> None:
    org, other = new_org(system), new_org(system, "Other", "+12025550177")
    stranger = new_agent(system, other).id
    with pytest.raises(NotFound):
        inbox_of(system, org, stranger)
    with pytest.raises(InvalidInput):
        inbox_of(system, org, new_agent(system, org).id, page=0)


def test_pages_of_notes(system: System) -> None:
    org = new_org(system)
    alice = new_agent(system, org, name="Alice").id
    actor = Actor(ActorKind.AGENT, str(alice), "agent")
    for n in range(3):
        contact = system.bus.handle(c.CreateContact(org, name=f"C{n}", phones=(f"+1415555020{n}",))).contact_id
        system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, actor))
    first = inbox_of(system, org, alice, page_size=2)
    second = inbox_of(system, org, alice, page=2, page_size=2)
    assert first.has_more and not second.has_more
    assert [n.contact_name for n in first.notes + second.notes] == ["C2", "C1", "C0"]
    assert first.unread == second.unread == 3
