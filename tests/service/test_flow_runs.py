"""Drip flows walked through days of simulated time, on SQLite and PostgreSQL.

Each test drives the system with commands, moves a hand-held clock to chosen moments and runs
every periodic job there (`scheduler.run_due`: consent clock, flows, outbox), then looks at what
the recording sender received and at the enrolment rows and their history. The shipped flows
(`flows/`) are used where they show the rule; small fixture flows (`tests/fixtures/flows_*`)
where a rule needs a shape the shipped ones do not have.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from optflow.adapters import orm
from optflow.adapters.senders import OutboundMessage
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, State
from optflow.entrypoints import scheduler
from optflow.service_layer.messagebus import save_opt_out_only

from conftest import ORG_NUMBER, START, Clock, RecordingSender, make_system, new_agent, new_org

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PHONE = "+12125550111"  # New York
EMAIL = "sam@example.com"
NEW_YORK = "America/New_York"
MINUTE = timedelta(minutes=1)
EVERY_STATUS = ("active", "paused", "done", "cancelled")

# START is Monday 23 November 2026, 13:00 in New York. The welcome drip's email waits for the
# next Tuesday at 10:00 local after its texts: Tuesday 1 December, 10:00 EST.
DAY_1 = START + timedelta(days=1)
DAY_3 = START + timedelta(days=3)
WELCOME_EMAIL_AT = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)

# What identifies each template in a message body (fixture templates start with their own tag).
MARKERS = {
    "thanks for your interest": "welcome_1",
    "a quick tip": "welcome_2",
    "Thank you for getting in touch": "welcome_email",
    "would like to reach you": "opt_in_request",
    "it has been a while since you agreed": "reauth_request",
    "you are unsubscribed": "opt_out_confirmation",
}


def label(message: OutboundMessage) -> str:
    """`channel:template` of a sent message, e.g. `text:welcome_1` or `email:DRIP-EMAIL-1`."""
    for marker, name in MARKERS.items():
        if marker in message.body:
            return f"{message.channel.value}:{name}"
    return f"{message.channel.value}:{message.body.split()[0]}"


class Journey:
    """Moves the clock forward to a moment, runs every periodic job once there, and tells what
    the sender received since the previous stop."""

    def __init__(self, system: System, clock: Clock, sender: RecordingSender) -> None:
        self.system = system
        self.clock = clock
        self.sender = sender
        self.seen = len(sender.sent)

    def at(self, moment: datetime) -> list[str]:
        assert moment >= self.clock.now, "time only moves forward"
        self.clock.now = moment
        scheduler.run_due(self.system, moment)
        return self.received()

    def received(self) -> list[str]:
        new = self.sender.sent[self.seen:]
        self.seen = len(self.sender.sent)
        return [label(message) for message in new]


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    """The shipped flows, on SQLite and on PostgreSQL."""
    return make_system(engine, clock, sender)


@pytest.fixture
def test_flows(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    """The fixture flows of tests/fixtures/flows_engine, on SQLite and on PostgreSQL."""
    return make_system(engine, clock, sender, FIXTURES / "flows_engine")


def setup_contact(system: System, **org_settings: object) -> tuple[int, Actor, int]:
    org = new_org(system, **org_settings)
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id))
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,), emails=(EMAIL,),
                                                time_zone=NEW_YORK)).contact_id
    return org, agent, contact


def opt_in(system: System, org: int, agent: Actor, contact: int, *channels: Channel) -> None:
    for channel in channels:
        system.bus.handle(c.RecordOptIn(org, contact, channel, agent, method="web_form"))


def sms(system: System, body: str, sid: str) -> Any:
    return system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, body, sid))


def consent_state(system: System, org: int, address: str, channel: Channel) -> State:
    with system.bus.uow() as uow:
        return uow.consents.get(org, address, channel).state


def enrollments(system: System, contact: int) -> list[dict[str, Any]]:
    with system.bus.uow() as uow:
        return uow.enrollments.for_contact(contact, EVERY_STATUS)


def only_enrollment(system: System, contact: int, flow: str) -> dict[str, Any]:
    rows = [row for row in enrollments(system, contact) if row["flow_name"] == flow]
    assert len(rows) == 1, rows
    return rows[0]


def steps(system: System, enrollment_id: int) -> list[tuple[str, str]]:
    """The enrolment's history as (step, outcome), with the wake-up moment of waits left out."""
    with system.bus.uow() as uow:
        rows = uow.enrollments.history(enrollment_id)
    return [(row["step"], row["outcome"].split(" until ")[0]) for row in rows]


def outbox(system: System, contact: int) -> list[dict[str, Any]]:
    query = select(orm.messages).where(orm.messages.c.contact_id == contact, orm.messages.c.direction == "out",
                                       orm.messages.c.audience == "customer").order_by(orm.messages.c.id)
    with system.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


# ------------------------------------------------------------------------------------- waits


def test_welcome_drip_sends_each_step_when_its_wait_is_over_and_not_before(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    org, agent, contact = setup_contact(system)
    opt_in(system, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    journey = Journey(system, clock, sender)
    system.bus.handle(c.RecordEvent(org, "lead.created", contact, {}))

    assert journey.at(START) == [], "already opted in to texts: nothing to ask"
    assert journey.at(DAY_1 - MINUTE) == []
    assert journey.at(DAY_1) == ["text:welcome_1"]
    assert journey.at(DAY_1) == [], "running the jobs again at the same moment sends nothing twice"
    assert journey.at(DAY_3 - MINUTE) == [], "wait: 2d is not over a minute early"
    assert journey.at(DAY_3) == ["text:welcome_2"]
    assert journey.at(WELCOME_EMAIL_AT - MINUTE) == []
    assert journey.at(WELCOME_EMAIL_AT) == ["email:welcome_email"]
    email = sender.sent[-1]
    assert email.to == EMAIL and email.subject == "Welcome, and what happens next"
    assert email.unsubscribe_url, "marketing email carries one-click unsubscribe"

    row = only_enrollment(system, contact, "welcome_drip")
    assert (row["status"], row["end_reason"], row["ended_at"]) == ("done", "completed", WELCOME_EMAIL_AT)
    assert steps(system, row["id"]) == [
        ("enrolled", "started"),
        ("wait", "waiting"),
        ("steps[2].then[0]", "queued welcome_1 on text"),
        ("wait", "waiting"),
        ("steps[2].then[2]", "queued welcome_2 on text"),
        ("wait", "waiting"),
        ("welcome_email", "queued welcome_email on email"),
    ]


def test_welcome_drip_asks_for_text_consent_and_skips_the_texts_without_it(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    org, agent, contact = setup_contact(system)
    opt_in(system, org, agent, contact, Channel.EMAIL)
    journey = Journey(system, clock, sender)
    system.bus.handle(c.RecordEvent(org, "lead.created", contact, {}))

    assert journey.at(START) == ["text:opt_in_request"]
    assert consent_state(system, org, PHONE, Channel.TEXT) is State.REQUESTED
    assert journey.at(DAY_1) == [], "no answer: the texts are skipped"
    assert journey.at(DAY_3) == []
    assert journey.at(WELCOME_EMAIL_AT) == ["email:welcome_email"]


@pytest.mark.xfail(strict=True, reason="receive_inbound tells the flows that the contact replied for YES, STOP "
                                       "and HELP too, so `exit_when: contact_replied` ends the drip on the very "
                                       "YES it asked for (docs/flows.md: only an ordinary message is a reply)")
def test_yes_to_the_drips_opt_in_request_carries_the_drip_on(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    org, agent, contact = setup_contact(system)
    journey = Journey(system, clock, sender)
    system.bus.handle(c.RecordEvent(org, "lead.created", contact, {}))
    assert journey.at(START) == ["text:opt_in_request"]
    sms(system, "YES", "SMyes")
    assert journey.at(DAY_1) == ["text:welcome_1"]


def test_an_ordinary_reply_ends_the_welcome_drip(system: System, clock: Clock, sender: RecordingSender) -> None:
    org, agent, contact = setup_contact(system)
    opt_in(system, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    journey = Journey(system, clock, sender)
    system.bus.handle(c.RecordEvent(org, "lead.created", contact, {}))
    assert journey.at(DAY_1) == ["text:welcome_1"]
    sms(system, "Thanks! What are your opening hours?", "SMq")
    assert journey.at(DAY_3) == [] and journey.at(WELCOME_EMAIL_AT) == []
    row = only_enrollment(system, contact, "welcome_drip")
    assert (row["status"], row["end_reason"]) == ("done", "contact replied")


# ------------------------------------------------------------------------- quiet hours and DST


def new_york(*args: int) -> datetime:
    """A New York wall time as an aware UTC instant."""
    from zoneinfo import ZoneInfo

    return datetime(*args, tzinfo=ZoneInfo(NEW_YORK)).astimezone(UTC)  # type: ignore[misc]


@pytest.mark.parametrize(("booked_local", "wake_utc", "send_utc"), [
    # The evening before the US fall-back (Sun 1 Nov 2026, 02:00 EDT -> 01:00 EST).
    ((2026, 10, 30, 15, 0), datetime(2026, 10, 31, 10, 30, tzinfo=UTC), datetime(2026, 10, 31, 12, 0, tzinfo=UTC)),
    ((2026, 10, 31, 15, 0), datetime(2026, 11, 1, 11, 30, tzinfo=UTC), datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
    # The evening before the spring-forward (Sun 14 Mar 2027, 02:00 EST -> 03:00 EDT).
    ((2027, 3, 12, 15, 0), datetime(2027, 3, 13, 11, 30, tzinfo=UTC), datetime(2027, 3, 13, 13, 0, tzinfo=UTC)),
    ((2027, 3, 13, 15, 0), datetime(2027, 3, 14, 10, 30, tzinfo=UTC), datetime(2027, 3, 14, 12, 0, tzinfo=UTC)),
], ids=["day-before-fall-back", "fall-back-day", "day-before-spring-forward", "spring-forward-day"])
def test_a_send_due_at_0630_local_waits_for_0800_local_across_dst(
        test_flows: System, clock: Clock, sender: RecordingSender, booked_local: tuple[int, ...],
        wake_utc: datetime, send_utc: datetime) -> None:
    clock.now = new_york(*booked_local)
    org, agent, contact = setup_contact(test_flows)
    opt_in(test_flows, org, agent, contact, Channel.TEXT)
    journey = Journey(test_flows, clock, sender)
    test_flows.bus.handle(c.RecordEvent(org, "appointment.booked", contact, {}))
    row = only_enrollment(test_flows, contact, "morning_note")
    assert row["next_run_at"] == wake_utc, "the wait ends at 06:30 local"

    assert journey.at(wake_utc) == [], "06:30 is inside quiet hours"
    row = only_enrollment(test_flows, contact, "morning_note")
    assert (row["status"], row["next_run_at"]) == ("active", send_utc), "deferred to 08:00 local"
    assert steps(test_flows, row["id"])[-1][1].startswith("deferred: ")
    assert outbox(test_flows, contact) == [], "nothing is queued while the step is deferred"

    assert journey.at(send_utc - MINUTE) == []
    assert journey.at(send_utc) == ["text:MORNING-NOTE:"]
    row = only_enrollment(test_flows, contact, "morning_note")
    assert (row["status"], row["ended_at"]) == ("done", send_utc)


# ------------------------------------------------------------------------------- opt-out, DND


def test_stop_after_the_last_text_leaves_the_emails_to_go(
        test_flows: System, clock: Clock, sender: RecordingSender) -> None:
    org, agent, contact = setup_contact(test_flows)
    opt_in(test_flows, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    journey = Journey(test_flows, clock, sender)
    test_flows.bus.handle(c.RecordEvent(org, "signup.completed", contact, {}))
    assert journey.at(START) == ["text:DRIP-TEXT-1"]
    assert journey.at(DAY_1) == ["text:DRIP-TEXT-2"]

    stop = sms(test_flows, "STOP", "SMstop")
    assert stop.state is State.OPTED_OUT
    assert consent_state(test_flows, org, EMAIL, Channel.EMAIL) is State.OPTED_IN
    assert only_enrollment(test_flows, contact, "texts_then_emails")["status"] == "active"
    assert journey.at(START + timedelta(days=2)) == ["email:DRIP-EMAIL-1"]
    assert journey.at(DAY_3) == ["email:DRIP-EMAIL-2"]
    assert only_enrollment(test_flows, contact, "texts_then_emails")["status"] == "done"


def test_stop_before_a_text_ends_the_drip_that_still_needs_texts(
        test_flows: System, clock: Clock, sender: RecordingSender) -> None:
    """docs/flows.md: an opt-out ends every enrolment whose remaining steps would still send on
    that channel, so the emails after the last text do not go either."""
    org, agent, contact = setup_contact(test_flows)
    opt_in(test_flows, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    journey = Journey(test_flows, clock, sender)
    test_flows.bus.handle(c.RecordEvent(org, "signup.completed", contact, {}))
    assert journey.at(START) == ["text:DRIP-TEXT-1"]

    sms(test_flows, "stop", "SMstop")
    row = only_enrollment(test_flows, contact, "texts_then_emails")
    assert (row["status"], row["end_reason"]) == ("cancelled", "opted out of text")
    assert steps(test_flows, row["id"])[-1] == ("cancelled", "opted out of text")
    for day in range(1, 5):
        assert journey.at(START + timedelta(days=day)) == []


def test_stop_applied_to_every_channel_stops_the_emails_too(
        test_flows: System, clock: Clock, sender: RecordingSender) -> None:
    org, agent, contact = setup_contact(test_flows, stop_applies_to_all_channels=True)
    opt_in(test_flows, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    journey = Journey(test_flows, clock, sender)
    test_flows.bus.handle(c.RecordEvent(org, "signup.completed", contact, {}))
    assert journey.at(START) == ["text:DRIP-TEXT-1"]
    assert journey.at(DAY_1) == ["text:DRIP-TEXT-2"]

    sms(test_flows, "STOP", "SMstop")
    assert consent_state(test_flows, org, EMAIL, Channel.EMAIL) is State.OPTED_OUT
    assert journey.at(START + timedelta(days=2)) == ["email:opt_out_confirmation"]
    assert journey.at(DAY_3) == []
    assert only_enrollment(test_flows, contact, "texts_then_emails")["status"] == "cancelled"


@pytest.mark.xfail(strict=True, reason="receive_inbound tells the flows that the contact replied for a STOP "
                                       "too, so the welcome drip's `exit_when: contact_replied` ends it and the "
                                       "email never goes")
def test_stop_after_the_welcome_texts_leaves_the_welcome_email_to_go(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    org, agent, contact = setup_contact(system)
    opt_in(system, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    journey = Journey(system, clock, sender)
    system.bus.handle(c.RecordEvent(org, "lead.created", contact, {}))
    assert journey.at(DAY_1) == ["text:welcome_1"]
    assert journey.at(DAY_3) == ["text:welcome_2"]
    sms(system, "STOP", "SMstop")
    assert journey.at(WELCOME_EMAIL_AT) == ["email:welcome_email"]


def test_dnd_on_every_channel_stops_everything_even_what_is_already_queued(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    org, agent, contact = setup_contact(system)
    opt_in(system, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    journey = Journey(system, clock, sender)
    system.bus.handle(c.RecordEvent(org, "lead.created", contact, {}))
    assert journey.at(DAY_1) == ["text:welcome_1"]

    clock.now = DAY_3
    system.flows.run_due(system.engine, DAY_3)  # welcome_2 reaches the outbox ...
    assert [m["status"] for m in outbox(system, contact)] == ["sent", "queued"]
    system.bus.handle(c.SetDnd(org, contact, agent, on=True, all_channels=True))  # ... then DND
    assert journey.at(DAY_3) == []
    assert outbox(system, contact)[-1]["status"] == "cancelled"
    for day in range(4, 15):
        assert journey.at(START + timedelta(days=day)) == []
    row = only_enrollment(system, contact, "welcome_drip")
    assert (row["status"], row["end_reason"], row["next_run_at"]) == ("cancelled", "do not disturb", None)


def test_dnd_on_one_channel_pauses_the_drip_and_lifting_it_resumes_on_schedule(
        test_flows: System, clock: Clock, sender: RecordingSender) -> None:
    org, agent, contact = setup_contact(test_flows)
    opt_in(test_flows, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    journey = Journey(test_flows, clock, sender)
    test_flows.bus.handle(c.RecordEvent(org, "signup.completed", contact, {}))
    assert journey.at(START) == ["text:DRIP-TEXT-1"]

    clock.now = START + timedelta(hours=1)
    test_flows.bus.handle(c.SetDnd(org, contact, agent, on=True, channels=(Channel.TEXT,)))
    row = only_enrollment(test_flows, contact, "texts_then_emails")
    assert (row["status"], row["end_reason"]) == ("paused", "do not disturb")
    assert journey.at(START + timedelta(hours=2)) == []

    test_flows.bus.handle(c.SetDnd(org, contact, agent, on=False, channels=(Channel.TEXT,)))
    assert only_enrollment(test_flows, contact, "texts_then_emails")["status"] == "active"
    assert journey.at(START + timedelta(hours=3)) == [], "lifting DND does not cut the wait short"
    assert journey.at(DAY_1) == ["text:DRIP-TEXT-2"]


def test_dnd_on_one_channel_held_past_a_wake_up_sends_once_lifted(
        test_flows: System, clock: Clock, sender: RecordingSender) -> None:
    org, agent, contact = setup_contact(test_flows)
    opt_in(test_flows, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    journey = Journey(test_flows, clock, sender)
    test_flows.bus.handle(c.RecordEvent(org, "signup.completed", contact, {}))
    assert journey.at(START) == ["text:DRIP-TEXT-1"]
    test_flows.bus.handle(c.SetDnd(org, contact, agent, on=True, channels=(Channel.TEXT,)))
    assert journey.at(DAY_1) == [] and journey.at(DAY_1 + timedelta(hours=2)) == []

    clock.now = DAY_1 + timedelta(hours=3)
    test_flows.bus.handle(c.SetDnd(org, contact, agent, on=False, channels=(Channel.TEXT,)))
    assert journey.at(clock.now) == ["text:DRIP-TEXT-2"]
