"""Drip flows walked through days of simulated time, on SQLite and PostgreSQL.

Each test drives the system with commands, moves a hand-held clock to chosen moments and runs
every periodic job there (`scheduler.run_due`: consent clock, flows, outbox), then looks at what
the recording sender received and at the enrolment rows and their history. The shipped flows
(`flows/`) are used where they show the rule; small fixture flows (`tests/fixtures/flows_*`)
where a rule needs a shape the shipped ones do not have.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, select

from conftest import ORG_NUMBER, START, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import orm
from optflow.adapters.senders import OutboundMessage
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, State
from optflow.domain.records import ENDED, RUNNING, Enrollment
from optflow.entrypoints import scheduler
from optflow.service_layer.flow_engine import RETRY_AFTER

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PHONE = "+12125550111"  # New York
EMAIL = "sam@example.com"
NEW_YORK = "America/New_York"
MINUTE = timedelta(minutes=1)
EVERY_STATUS = (*RUNNING, *ENDED)

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

    def start(self, event: str, *opted_in: Channel, data: dict[str, Any] | None = None,
              **org_settings: object) -> tuple[int, Actor, int]:
        """Sam in a new org, opted in to `opted_in`, then `event`, which enrols Sam in the flows it
        triggers; the journey begins with the event. Returns the org, its agent and the contact."""
        org, agent, contact = setup_contact(self.system, **org_settings)
        opt_in(self.system, org, agent, contact, *opted_in)
        self.seen = len(self.sender.sent)
        self.system.bus.handle(c.RecordEvent(org, event, contact, data or {}))
        return org, agent, contact

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
def fixture_flows(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
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


def enrollments(system: System, contact: int) -> list[Enrollment]:
    with system.bus.uow() as uow:
        return uow.enrollments.for_contact(contact, EVERY_STATUS)


def only_enrollment(system: System, contact: int, flow: str) -> Enrollment:
    rows = [row for row in enrollments(system, contact) if row.flow_name == flow]
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
    journey = Journey(system, clock, sender)
    _, _, contact = journey.start("lead.created", Channel.TEXT, Channel.EMAIL)

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
    assert (row.status, row.end_reason, row.ended_at) == ("done", "completed", WELCOME_EMAIL_AT)
    assert steps(system, row.id) == [
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
    journey = Journey(system, clock, sender)
    org, _, _ = journey.start("lead.created", Channel.EMAIL)

    assert journey.at(START) == ["text:opt_in_request"]
    assert consent_state(system, org, PHONE, Channel.TEXT) is State.REQUESTED
    assert journey.at(DAY_1) == [], "no answer: the texts are skipped"
    assert journey.at(DAY_3) == []
    assert journey.at(WELCOME_EMAIL_AT) == ["email:welcome_email"]


def test_yes_to_the_drips_opt_in_request_carries_the_drip_on(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(system, clock, sender)
    journey.start("lead.created")
    assert journey.at(START) == ["text:opt_in_request"]
    sms(system, "YES", "SMyes")
    assert journey.at(DAY_1) == ["text:welcome_1"]


def test_an_ordinary_reply_ends_the_welcome_drip(system: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(system, clock, sender)
    _, _, contact = journey.start("lead.created", Channel.TEXT, Channel.EMAIL)
    assert journey.at(DAY_1) == ["text:welcome_1"]
    sms(system, "Thanks! What are your opening hours?", "SMq")
    assert journey.at(DAY_3) == [] and journey.at(WELCOME_EMAIL_AT) == []
    row = only_enrollment(system, contact, "welcome_drip")
    assert (row.status, row.end_reason) == ("done", "contact replied")


# ------------------------------------------------------------------------- quiet hours and DST


def new_york(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """A New York wall time as an aware UTC instant."""
    return datetime(year, month, day, hour, minute, tzinfo=ZoneInfo(NEW_YORK)).astimezone(UTC)


@pytest.mark.parametrize(("booked_local", "wake_utc", "send_utc"), [
    # The evening before the US fall-back (Sun 1 Nov 2026, 02:00 EDT -> 01:00 EST).
    ((2026, 10, 30, 15, 0), datetime(2026, 10, 31, 10, 30, tzinfo=UTC), datetime(2026, 10, 31, 12, 0, tzinfo=UTC)),
    ((2026, 10, 31, 15, 0), datetime(2026, 11, 1, 11, 30, tzinfo=UTC), datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
    # The evening before the spring-forward (Sun 14 Mar 2027, 02:00 EST -> 03:00 EDT).
    ((2027, 3, 12, 15, 0), datetime(2027, 3, 13, 11, 30, tzinfo=UTC), datetime(2027, 3, 13, 13, 0, tzinfo=UTC)),
    ((2027, 3, 13, 15, 0), datetime(2027, 3, 14, 10, 30, tzinfo=UTC), datetime(2027, 3, 14, 12, 0, tzinfo=UTC)),
], ids=["day-before-fall-back", "fall-back-day", "day-before-spring-forward", "spring-forward-day"])
def test_a_send_due_at_0630_local_waits_for_0800_local_across_dst(
        fixture_flows: System, clock: Clock, sender: RecordingSender, booked_local: tuple[int, ...],
        wake_utc: datetime, send_utc: datetime) -> None:
    clock.now = new_york(*booked_local)
    journey = Journey(fixture_flows, clock, sender)
    _, _, contact = journey.start("appointment.booked", Channel.TEXT)
    row = only_enrollment(fixture_flows, contact, "morning_note")
    assert row.next_run_at == wake_utc, "the wait ends at 06:30 local"

    assert journey.at(wake_utc) == [], "06:30 is inside quiet hours"
    row = only_enrollment(fixture_flows, contact, "morning_note")
    assert (row.status, row.next_run_at) == ("active", send_utc), "deferred to 08:00 local"
    assert steps(fixture_flows, row.id)[-1][1].startswith("deferred: ")
    assert outbox(fixture_flows, contact) == [], "nothing is queued while the step is deferred"

    assert journey.at(send_utc - MINUTE) == []
    assert journey.at(send_utc) == ["text:MORNING-NOTE"]
    assert outbox(fixture_flows, contact)[-1]["sent_at"] == send_utc
    row = only_enrollment(fixture_flows, contact, "morning_note")
    assert (row.status, row.ended_at) == ("done", send_utc)


# ------------------------------------------------------------------------------- opt-out, DND


def test_stop_after_the_last_text_leaves_the_emails_to_go(
        fixture_flows: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(fixture_flows, clock, sender)
    org, _, contact = journey.start("signup.completed", Channel.TEXT, Channel.EMAIL)
    assert journey.at(START) == ["text:DRIP-TEXT-1"]
    assert journey.at(DAY_1) == ["text:DRIP-TEXT-2"]

    stop = sms(fixture_flows, "STOP", "SMstop")
    assert stop.state is State.OPTED_OUT
    assert consent_state(fixture_flows, org, EMAIL, Channel.EMAIL) is State.OPTED_IN
    assert only_enrollment(fixture_flows, contact, "texts_then_emails").status == "active"
    assert journey.at(START + timedelta(days=2)) == ["email:DRIP-EMAIL-1"]
    assert journey.at(DAY_3) == ["email:DRIP-EMAIL-2"]
    assert only_enrollment(fixture_flows, contact, "texts_then_emails").status == "done"


def test_stop_halfway_skips_the_remaining_texts_and_the_emails_still_go(
        fixture_flows: System, clock: Clock, sender: RecordingSender) -> None:
    """docs/flows.md: after a STOP to the texts, the drip's text steps are skipped (and said so
    in its history) while its emails still go, because email consent stands."""
    journey = Journey(fixture_flows, clock, sender)
    _, _, contact = journey.start("signup.completed", Channel.TEXT, Channel.EMAIL)
    assert journey.at(START) == ["text:DRIP-TEXT-1"]

    sms(fixture_flows, "stop", "SMstop")
    assert only_enrollment(fixture_flows, contact, "texts_then_emails").status == "active"
    assert journey.at(DAY_1) == [], "no further text"
    row = only_enrollment(fixture_flows, contact, "texts_then_emails")
    assert any(outcome.startswith("skipped:") and "opted out" in outcome
               for _, outcome in steps(fixture_flows, row.id))
    assert journey.at(START + timedelta(days=2)) == ["email:DRIP-EMAIL-1"]
    assert journey.at(DAY_3) == ["email:DRIP-EMAIL-2"]
    assert only_enrollment(fixture_flows, contact, "texts_then_emails").status == "done"


def test_stop_to_the_only_channel_a_drip_uses_ends_it(
        fixture_flows: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(fixture_flows, clock, sender)
    org, agent, contact = journey.start("signup.completed", Channel.TEXT, Channel.EMAIL)
    assert journey.at(START) == ["text:DRIP-TEXT-1"]
    fixture_flows.bus.handle(c.OptOut(org, contact, Channel.EMAIL, agent))
    assert only_enrollment(fixture_flows, contact, "texts_then_emails").status == "active"
    sms(fixture_flows, "stop", "SMstop")  # now nothing is left open for its remaining steps
    row = only_enrollment(fixture_flows, contact, "texts_then_emails")
    assert (row.status, row.end_reason) == ("cancelled", "opted out of text")
    assert steps(fixture_flows, row.id)[-1] == ("cancelled", "opted out of text")
    for day in range(1, 5):
        assert [m for m in journey.at(START + timedelta(days=day)) if "confirmation" not in m] == []


def test_stop_applied_to_every_channel_stops_the_emails_too(
        fixture_flows: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(fixture_flows, clock, sender)
    org, _, contact = journey.start("signup.completed", Channel.TEXT, Channel.EMAIL,
                                    stop_applies_to_all_channels=True)
    assert journey.at(START) == ["text:DRIP-TEXT-1"]
    assert journey.at(DAY_1) == ["text:DRIP-TEXT-2"]

    sms(fixture_flows, "STOP", "SMstop")
    assert consent_state(fixture_flows, org, EMAIL, Channel.EMAIL) is State.OPTED_OUT
    assert journey.at(START + timedelta(days=2)) == []
    assert journey.at(DAY_3) == []
    assert only_enrollment(fixture_flows, contact, "texts_then_emails").status == "cancelled"


def test_stop_after_the_welcome_texts_leaves_the_welcome_email_to_go(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(system, clock, sender)
    journey.start("lead.created", Channel.TEXT, Channel.EMAIL)
    assert journey.at(DAY_1) == ["text:welcome_1"]
    assert journey.at(DAY_3) == ["text:welcome_2"]
    sms(system, "STOP", "SMstop")
    assert journey.at(WELCOME_EMAIL_AT) == ["email:welcome_email"]


def test_dnd_on_every_channel_stops_everything_even_what_is_already_queued(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(system, clock, sender)
    org, agent, contact = journey.start("lead.created", Channel.TEXT, Channel.EMAIL)
    assert journey.at(DAY_1) == ["text:welcome_1"]

    clock.now = DAY_3
    system.flows.run_due(system.uows, DAY_3)  # welcome_2 reaches the outbox ...
    assert [m["status"] for m in outbox(system, contact)] == ["sent", "queued"]
    system.bus.handle(c.SetDnd(org, contact, agent, on=True, all_channels=True))  # ... then DND
    assert journey.at(DAY_3) == []
    assert outbox(system, contact)[-1]["status"] == "cancelled"
    for day in range(4, 15):
        assert journey.at(START + timedelta(days=day)) == []
    row = only_enrollment(system, contact, "welcome_drip")
    assert (row.status, row.end_reason, row.next_run_at) == ("cancelled", "do not disturb", None)


def test_dnd_on_one_channel_pauses_the_drip_and_lifting_it_resumes_on_schedule(
        fixture_flows: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(fixture_flows, clock, sender)
    org, agent, contact = journey.start("signup.completed", Channel.TEXT, Channel.EMAIL)
    assert journey.at(START) == ["text:DRIP-TEXT-1"]

    clock.now = START + timedelta(hours=1)
    fixture_flows.bus.handle(c.SetDnd(org, contact, agent, on=True, channels=(Channel.TEXT,)))
    row = only_enrollment(fixture_flows, contact, "texts_then_emails")
    assert (row.status, row.end_reason) == ("paused", "do not disturb")
    assert journey.at(START + timedelta(hours=2)) == []

    fixture_flows.bus.handle(c.SetDnd(org, contact, agent, on=False, channels=(Channel.TEXT,)))
    assert only_enrollment(fixture_flows, contact, "texts_then_emails").status == "active"
    assert journey.at(START + timedelta(hours=3)) == [], "lifting DND does not cut the wait short"
    assert journey.at(DAY_1) == ["text:DRIP-TEXT-2"]


def test_dnd_on_one_channel_held_past_a_wake_up_sends_once_lifted(
        fixture_flows: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(fixture_flows, clock, sender)
    org, agent, contact = journey.start("signup.completed", Channel.TEXT, Channel.EMAIL)
    assert journey.at(START) == ["text:DRIP-TEXT-1"]
    fixture_flows.bus.handle(c.SetDnd(org, contact, agent, on=True, channels=(Channel.TEXT,)))
    assert journey.at(DAY_1) == [] and journey.at(DAY_1 + timedelta(hours=2)) == []

    clock.now = DAY_1 + timedelta(hours=3)
    fixture_flows.bus.handle(c.SetDnd(org, contact, agent, on=False, channels=(Channel.TEXT,)))
    assert journey.at(clock.now) == ["text:DRIP-TEXT-2"]


# ----------------------------------------------------------------------------- flow versions


def test_a_flow_edited_while_contacts_are_enrolled_keeps_each_on_its_version(
        engine: Engine, clock: Clock, sender: RecordingSender) -> None:
    before = make_system(engine, clock, sender, FIXTURES / "flows_v1")
    org, agent, early = setup_contact(before)
    late = before.bus.handle(c.CreateContact(org, name="Lee", phones=("+12125550122",),
                                             time_zone=NEW_YORK)).contact_id
    opt_in(before, org, agent, early, Channel.TEXT)
    opt_in(before, org, agent, late, Channel.TEXT)
    journey = Journey(before, clock, sender)
    before.bus.handle(c.RecordEvent(org, "account.opened", early, {}))
    assert journey.at(START) == ["text:ONBOARDING-FIRST"]

    after = make_system(engine, clock, sender, FIXTURES / "flows_v2")  # the redeploy, same database
    assert before.flows.flows["onboarding"].version != after.flows.flows["onboarding"].version
    journey = Journey(after, clock, sender)
    clock.now = START + timedelta(hours=1)
    after.bus.handle(c.RecordEvent(org, "account.opened", late, {}))
    assert journey.at(clock.now) == ["text:ONBOARDING-FIRST"]

    assert journey.at(DAY_1) == ["text:ONBOARDING-V1-FOLLOW-UP"], "enrolled on version 1: its one-day wait"
    assert journey.at(START + timedelta(days=2)) == []
    assert journey.at(START + timedelta(days=2, hours=1)) == ["text:ONBOARDING-V2-FOLLOW-UP"]
    first, second = only_enrollment(after, early, "onboarding"), only_enrollment(after, late, "onboarding")
    assert first.flow_version == before.flows.flows["onboarding"].version
    assert second.flow_version == after.flows.flows["onboarding"].version
    assert (first.status, second.status) == ("done", "done")
    assert steps(after, first.id)[-1] == ("follow_up_v1", "queued onboarding_v1_follow_up on text")
    assert steps(after, second.id)[-1] == ("follow_up_v2", "queued onboarding_v2_follow_up on text")


def test_a_step_that_fails_to_render_waits_for_a_fix_without_blocking_anything_else(
        engine: Engine, clock: Clock, sender: RecordingSender, tmp_path: Path) -> None:
    flows_dir = tmp_path / "flows"
    shutil.copytree(FIXTURES / "flows_template_error", flows_dir)
    broken = make_system(engine, clock, sender, flows_dir)
    org, agent, contact = setup_contact(broken)
    opt_in(broken, org, agent, contact, Channel.TEXT)
    journey = Journey(broken, clock, sender)

    result = broken.bus.handle(c.RecordEvent(org, "member.joined", contact, {}))
    assert result.detail == "enrolled in 2 flow(s)", "the event is recorded although one flow failed"
    assert journey.at(START) == ["text:MEMBER-WELCOME"]
    note = only_enrollment(broken, contact, "member_note")
    assert (note.status, note.pc, note.next_run_at) == ("active", 0, START + RETRY_AFTER)
    assert steps(broken, note.id)[-1] == (
        "error", f"UndefinedError: 'member_number' is undefined; trying again at {(START + RETRY_AFTER).isoformat()}")

    clock.now = START + RETRY_AFTER
    report = scheduler.run_due(broken, clock.now)
    assert journey.received() == ["text:MEMBER-WELCOME"], "the rest of the batch went on"
    assert len(report.flows.errors) == 1 and "member_number" in report.flows.errors[0]

    (flows_dir / "templates" / "member_note.j2").write_text("MEMBER-NOTE for you.\n", encoding="utf-8")
    fixed = make_system(engine, clock, sender, flows_dir)  # the fix, deployed
    journey = Journey(fixed, clock, sender)
    assert journey.at(START + 2 * RETRY_AFTER - MINUTE) == []
    assert journey.at(START + 2 * RETRY_AFTER) == ["text:MEMBER-NOTE"]
    assert only_enrollment(fixed, contact, "member_note").status == "done"


# ------------------------------------------------------------------ consent clock and reminder


def test_reauth_sweep_starts_the_reminder_flow_and_yes_restarts_the_clock(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    clock.now = START - timedelta(days=181)
    org, agent, contact = setup_contact(system, reauth_days={"text": 180})
    opt_in(system, org, agent, contact, Channel.TEXT)
    journey = Journey(system, clock, sender)
    assert journey.at(START - timedelta(days=1)) == [], "180 days old is not yet too old"
    assert consent_state(system, org, PHONE, Channel.TEXT) is State.OPTED_IN

    assert journey.at(START) == ["text:reauth_request"]
    assert consent_state(system, org, PHONE, Channel.TEXT) is State.REAUTH_DUE
    reminder = only_enrollment(system, contact, "reauth_reminder")
    assert reminder.status == "active"

    clock.now = START + timedelta(hours=2)
    reply = sms(system, "YES", "SMreauth")
    assert reply.state is State.OPTED_IN
    with system.bus.uow() as uow:
        assert uow.consents.get(org, PHONE, Channel.TEXT).opted_in_at == clock.now
    reminder = only_enrollment(system, contact, "reauth_reminder")
    assert (reminder.status, reminder.end_reason) == ("done", "consent opted_in on text")
    assert journey.at(START + timedelta(days=4)) == [], "no reminder after the customer confirmed"

    restarted = START + timedelta(hours=2, days=180)
    assert journey.at(restarted) == [] and consent_state(system, org, PHONE, Channel.TEXT) is State.OPTED_IN
    assert journey.at(restarted + timedelta(hours=1)) == ["text:reauth_request"], "due again, and asked again"
    assert len([row for row in enrollments(system, contact) if row.flow_name == "reauth_reminder"]) == 2


def test_reauth_reminder_asks_once_more_after_three_days_without_an_answer(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    clock.now = START - timedelta(days=181)
    org, agent, contact = setup_contact(system, reauth_days={"text": 180})
    opt_in(system, org, agent, contact, Channel.TEXT)
    journey = Journey(system, clock, sender)
    assert journey.at(START) == ["text:reauth_request"]
    assert journey.at(DAY_3 - MINUTE) == []
    assert journey.at(DAY_3) == ["text:reauth_request"]
    row = only_enrollment(system, contact, "reauth_reminder")
    assert (row.status, steps(system, row.id)[-1]) == ("done", ("reminder", "re-authorisation request queued"))


# ------------------------------------------------------------------------------ payment plans


def test_payment_plan_flow_asks_for_consent_and_reminds_after_two_days(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(system, clock, sender)
    _, _, contact = journey.start("payment_plan.created", data={"plan": "P-1"})
    assert journey.at(START) == ["text:opt_in_request"]
    assert journey.at(START + timedelta(days=2) - MINUTE) == []
    assert journey.at(START + timedelta(days=2)) == ["text:opt_in_request"]
    row = only_enrollment(system, contact, "payment_plan_opt_in")
    assert (row.status, steps(system, row.id)[-1]) == ("done", ("reminder", "opt-in request queued"))


def test_payment_plan_flow_stops_asking_once_the_customer_says_yes(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(system, clock, sender)
    _, _, contact = journey.start("payment_plan.created")
    assert journey.at(START) == ["text:opt_in_request"]
    sms(system, "yes", "SMyes")
    assert journey.at(START + timedelta(days=2)) == []
    assert only_enrollment(system, contact, "payment_plan_opt_in").status == "done"


@pytest.mark.parametrize("channel_state", ["opted_in", "opted_out"])
def test_payment_plan_flow_does_not_ask_a_contact_who_already_answered(
        system: System, clock: Clock, sender: RecordingSender, channel_state: str) -> None:
    org, agent, contact = setup_contact(system)
    if channel_state == "opted_in":
        opt_in(system, org, agent, contact, Channel.TEXT)
    else:
        sms(system, "STOP", "SMstop")
    journey = Journey(system, clock, sender)
    system.bus.handle(c.RecordEvent(org, "payment_plan.created", contact, {}))
    for day in (0, 2, 4):
        assert journey.at(START + timedelta(days=day)) == []
    assert [m for m in outbox(system, contact) if m["kind"] == "opt_in_request"] == []
    row = only_enrollment(system, contact, "payment_plan_opt_in")
    assert (row.status, row.end_reason) == ("done", "completed")
    assert consent_state(system, org, PHONE, Channel.TEXT).value == channel_state


# ----------------------------------------------------------------------------- discontinued


def test_discontinued_opts_out_everywhere_sets_dnd_and_ends_every_flow(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(system, clock, sender)
    org, _, contact = journey.start("lead.created", Channel.TEXT, Channel.EMAIL)
    assert journey.at(DAY_1) == ["text:welcome_1"]

    system.bus.handle(c.RecordEvent(org, "pipeline.stage_changed", contact, {"stage": "won"}))
    assert only_enrollment(system, contact, "welcome_drip").status == "active", "only `discontinued` matches"
    system.bus.handle(c.RecordEvent(org, "pipeline.stage_changed", contact, {"stage": "discontinued"}))

    for address, channel in ((PHONE, Channel.TEXT), (PHONE, Channel.CALL), (PHONE, Channel.WHATSAPP),
                             (EMAIL, Channel.EMAIL)):
        assert consent_state(system, org, address, channel) is State.OPTED_OUT, channel
    with system.bus.uow() as uow:
        contact_row = uow.contacts.get(org, contact)
    assert contact_row.dnd_all and contact_row.do_not_call
    rows = {row.flow_name: row for row in enrollments(system, contact)}
    assert rows["welcome_drip"].status == "cancelled"
    assert (rows["discontinued"].status, rows["discontinued"].end_reason) == ("done", "completed")
    assert steps(system, rows["discontinued"].id) == [
        ("enrolled", "started"), ("steps[0]", "opted out"), ("steps[1]", "do not disturb set"),
        ("steps[2]", "removed from other flows")]
    # An opt-out made by a flow sends no confirmation: nothing at all goes.
    assert journey.at(DAY_1 + MINUTE) == []
    for day in range(2, 15):
        assert journey.at(START + timedelta(days=day)) == []


# ------------------------------------------------------------------ the dispatcher's re-check


def test_a_drip_message_still_in_the_outbox_is_not_sent_after_a_stop(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    journey = Journey(system, clock, sender)
    _, _, contact = journey.start("lead.created", Channel.TEXT, Channel.EMAIL)
    clock.now = DAY_1
    system.flows.run_due(system.uows, DAY_1)
    assert [(m["kind"], m["status"]) for m in outbox(system, contact)] == [("normal", "queued")]
    sms(system, "STOP", "SMstop")
    assert journey.at(DAY_1 + MINUTE) == []
    assert outbox(system, contact)[0]["status"] == "cancelled"


def test_the_dispatcher_asks_the_policy_again_before_sending_a_queued_drip_message(
        system: System, clock: Clock, sender: RecordingSender) -> None:
    """The consent row says opted out but nothing cancelled the queued drip text (a row changed
    by hand, or by a process that died between its commit and the cancellation of another
    batch): only the dispatcher stands in its way."""
    journey = Journey(system, clock, sender)
    _, _, contact = journey.start("lead.created", Channel.TEXT, Channel.EMAIL)
    clock.now = DAY_1
    system.flows.run_due(system.uows, DAY_1)
    with system.bus.uow() as uow:
        consent = uow.consents.get(1, PHONE, Channel.TEXT, lock=True)
        consent.state, consent.opted_out_at = State.OPTED_OUT, DAY_1
        uow.consents.save(consent, DAY_1)
        uow.commit()
    assert [(m["kind"], m["status"]) for m in outbox(system, contact)] == [("normal", "queued")]
    assert journey.at(DAY_1 + MINUTE) == []
    [message] = outbox(system, contact)
    assert message["status"] == "denied" and "opted out" in message["last_error"]
