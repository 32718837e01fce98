"""`FlowEngine.run_due` runs a claimed batch set-based: the same outcome as one enrolment at a time.

The enrolments whose steps until their next wait are sends read their facts from the batch's
preload and have their outbox rows, history rows and moves written in bulk; the others (an
opt-out step, say) run one by one in a savepoint, after the bulk writes so far. The reference is
the per-enrolment path (`_execute_isolated`, what `enroll` uses and what run_due did for every
enrolment): the same scenario is built in two databases, run both ways, and every outbox row,
history row and enrolment must come out equal. The rules that matter most are also checked on
their own, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from conftest import START, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import db, orm
from optflow.adapters.flow_batch import BatchReads, PreloadedConsents
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, State
from optflow.service_layer.flow_engine import RETRY_AFTER, FlowRunReport

NEW_YORK = "America/New_York"  # START is 13:00 there: marketing may go
TOKYO = "Asia/Tokyo"  # START is 03:00 there: quiet hours hold marketing until 08:00


def flow(name: str, description: str, purpose: str, steps: str) -> str:
    """A flow's YAML, enrolled by the event `<name>.start`, any number of times."""
    return (f"name: {name}\ndescription: {description}\ntrigger: {{event: {name}.start}}\npurpose: {purpose}\n"
            f"reenroll: always\nsteps:\n{steps}")


FLOWS = {
    "drip.yaml": flow("drip", "A text, an email to those who agreed to email, a day's wait, another text.",
                      "marketing", """\
  - id: first_text
    send: {channel: text, template: drip_text}
  - id: email_if_agreed
    if: {consent: {channel: email, state: opted_in}}
    then:
      - send: {channel: email, template: drip_email, subject: News}
  - wait: 1d
  - id: last_text
    send: {channel: text, template: drip_text}
"""),
    "stopper.yaml": flow("stopper", "Opts the contact out of texts.", "transactional",
                         "  - opt_out: {channels: [text]}\n"),
    "broken.yaml": flow("broken", "A text whose template needs a variable optflow does not have.", "transactional",
                        "  - id: note\n    send: {channel: text, template: broken_text}\n"),
}
TEMPLATES = {
    "drip_text.j2": "DRIP-TEXT for {{ contact_name }} from {{ org_name }}.",
    "drip_email.j2": "DRIP-EMAIL for {{ contact_name }}.",
    "broken_text.j2": "BROKEN {{ member_number }}",
}


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    target = tmp_path / "flows"
    (target / "templates").mkdir(parents=True)
    for name, source in FLOWS.items():
        (target / name).write_text(source, encoding="utf-8")
    for name, source in TEMPLATES.items():
        (target / "templates" / name).write_text(source, encoding="utf-8")
    return target


class Scenario:
    """Contacts of every kind the policy tells apart, enrolled in order; `ids[name]` is the
    contact's id (the same in every database the scenario is built in)."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.ids: dict[str, int] = {}
        self.org = new_org(system, "Acme")
        self.capped_org = new_org(system, "Capped", number="+12025550124",
                                  caps=[{"limit": 1, "window_hours": 24, "channels": ["text"]}])
        self.agents = {org: Actor(ActorKind.AGENT, str(new_agent(system, org).id))
                       for org in (self.org, self.capped_org)}

    def contact(self, name: str, *opted_in: Channel, org: int | None = None, phone: bool = True,
                time_zone: str = NEW_YORK) -> int:
        org = org or self.org
        number = f"+1212555{len(self.ids):04d}"
        contact = self.system.bus.handle(c.CreateContact(
            org, name=name, phones=(number,) if phone else (), emails=(f"{name.lower()}@example.com",),
            time_zone=time_zone)).contact_id
        for channel in opted_in:
            self.system.bus.handle(c.RecordOptIn(org, contact, channel, self.agents[org], method="web_form"))
        self.ids[name] = contact
        return contact

    def enrol_in(self, org: int, name: str, *flows: str) -> None:
        with self.system.bus.uow() as uow:
            for flow in flows:
                self.system.flows.enroll(uow, org, self.ids[name], self.system.flows.flows[flow], {}, START,
                                         run_now=False)
            uow.commit()


def build(system: System) -> Scenario:
    s = Scenario(system)
    actor = s.agents[s.org]
    s.contact("Both", Channel.TEXT, Channel.EMAIL)
    s.contact("TextOnly", Channel.TEXT)
    s.contact("Stopped", Channel.TEXT, Channel.EMAIL)
    system.bus.handle(c.OptOut(s.org, s.ids["Stopped"], Channel.TEXT, actor))
    s.contact("Unknown")
    s.contact("Quiet", Channel.TEXT)
    system.bus.handle(c.SetDnd(s.org, s.ids["Quiet"], actor, on=True, channels=(Channel.TEXT,)))
    s.contact("NoPhone", Channel.EMAIL, phone=False)
    s.contact("Asleep", Channel.TEXT, time_zone=TOKYO)
    s.contact("Suppressed", Channel.TEXT, Channel.EMAIL)  # its number is on the suppression list, for texts
    system.bus.handle(c.AddSuppression(s.org, actor, f"+1212555{len(s.ids) - 1:04d}", "litigator", Channel.TEXT))
    s.contact("DripThenStop", Channel.TEXT)
    s.contact("StopThenDrip", Channel.TEXT)
    s.contact("Broken", Channel.TEXT)
    s.contact("Capped", Channel.TEXT, org=s.capped_org)
    s.contact("Uncapped", Channel.TEXT, org=s.capped_org)
    s.contact("Twice", Channel.TEXT, org=s.capped_org)
    with system.bus.uow() as uow:  # the cap of one text a day is used up for `Capped`
        uow.messages.add(org_id=s.capped_org, contact_id=s.ids["Capped"], direction="out", audience="customer",
                         channel="text", address="+12125550010", body="earlier", purpose="marketing",
                         kind="normal", status="sent", created_at=START - timedelta(hours=2),
                         sent_at=START - timedelta(hours=2))
        uow.commit()
    for name in ("Both", "TextOnly", "Stopped", "Unknown", "Quiet", "NoPhone", "Asleep", "Suppressed"):
        s.enrol_in(s.org, name, "drip")
    s.enrol_in(s.org, "DripThenStop", "drip", "stopper")
    s.enrol_in(s.org, "StopThenDrip", "stopper", "drip")
    s.enrol_in(s.org, "Broken", "broken", "drip")
    s.enrol_in(s.capped_org, "Capped", "drip")
    s.enrol_in(s.capped_org, "Uncapped", "drip")
    s.enrol_in(s.capped_org, "Twice", "drip", "drip")  # the first drip's queued text counts for the second
    return s


def deliver_capped_org(system: System, scenario: Scenario) -> None:
    """What the dispatcher would have done by then for the capped org: its queued texts went out
    when due (a queued text counts for the cap at the moment it may go, so left queued it would
    keep the next one back)."""
    m = orm.messages.c
    with system.engine.begin() as conn:
        conn.execute(orm.messages.update().where(
            m.org_id == scenario.capped_org, m.status == "queued", m.direction == "out",
        ).values(status="sent", sent_at=m.not_before))


def run_one_by_one(system: System, now: Any, batch: int) -> FlowRunReport:
    """The per-enrolment path for every claimed enrolment: the reference."""
    report = FlowRunReport()
    while True:
        with SqlUnitOfWork(system.engine) as uow:
            rows = uow.enrollments.claim_due(now, batch, uow.skip_locked)
            for row in rows:
                system.flows._execute_isolated(uow, row, now, report)
            uow.commit()
        report.enrollments += len(rows)
        if len(rows) < batch:
            return report


def snapshot(engine: Engine) -> dict[str, Any]:
    """Everything a run writes, without the ids of new rows (written in another order)."""
    m, s, e = orm.messages.c, orm.enrollment_steps.c, orm.enrollments.c
    with engine.connect() as conn:
        messages = sorted((tuple(row) for row in conn.execute(select(
            m.enrollment_id, m.contact_id, m.channel, m.address, m.body, m.subject, m.purpose, m.kind, m.status,
            m.not_before, m.created_at, m.last_error).where(m.direction == "out"))), key=repr)
        steps = [tuple(row) for row in conn.execute(select(s.enrollment_id, s.pc, s.step, s.outcome, s.at)
                                                    .order_by(s.enrollment_id, s.id))]
        enrollments = [tuple(row) for row in conn.execute(select(
            e.id, e.contact_id, e.flow_name, e.pc, e.status, e.next_run_at, e.ended_at, e.end_reason).order_by(e.id))]
    return {"messages": messages, "steps": steps, "enrollments": enrollments}


def outbox(engine: Engine, contact: int) -> list[tuple[str, str, str]]:
    """What the flows queued for the contact: channel, status, body."""
    m = orm.messages.c
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(
            select(m.channel, m.status, m.body).where(m.contact_id == contact, m.enrollment_id.is_not(None))
            .order_by(m.id))]


def enrollments_of(engine: Engine, contact: int) -> list[dict[str, Any]]:
    e = orm.enrollments.c
    with engine.connect() as conn:
        return [dict(row) for row in conn.execute(
            select(orm.enrollments).where(e.contact_id == contact).order_by(e.id)).mappings()]


@pytest.mark.parametrize("batch", [4, 500])
def test_a_batch_comes_out_as_running_each_enrolment_on_its_own(
        tmp_path: Path, flows_dir: Path, clock: Clock, batch: int) -> None:
    systems = []
    for name in ("batched", "one_by_one"):
        engine = db.make_engine(f"sqlite:///{tmp_path / name}.db")
        db.create_schema(engine)
        systems.append(make_system(engine, clock, RecordingSender(), flows_dir))
    batched, one_by_one = systems
    scenario = build(batched)
    reference = build(one_by_one)
    try:
        for moment in (START, START + timedelta(hours=6), START + timedelta(days=1, hours=1)):
            clock.now = moment
            if moment > START + timedelta(days=1):
                deliver_capped_org(batched, scenario)
                deliver_capped_org(one_by_one, reference)
            assert batched.flows.run_due(batched.uows, moment, batch=batch) == \
                run_one_by_one(one_by_one, moment, batch), moment
            assert snapshot(batched.engine) == snapshot(one_by_one.engine), moment
        # The outcome itself, so the comparison cannot pass with both paths wrong in the same way.
        ids = scenario.ids
        assert [row[:2] for row in outbox(batched.engine, ids["Both"])] == [
            ("text", "queued"), ("email", "queued"), ("text", "queued")]
        for name in ("Unknown", "Quiet"):
            assert outbox(batched.engine, ids[name]) == [], name
        assert [row[:2] for row in outbox(batched.engine, ids["Stopped"])] == [("email", "queued")]
        assert [row[:2] for row in outbox(batched.engine, ids["Suppressed"])] == [("email", "queued")]
        assert "Unsubscribe: http://" in outbox(batched.engine, ids["Stopped"])[0][2]
        assert [row[:2] for row in outbox(batched.engine, ids["DripThenStop"])] == [("text", "cancelled")]
        assert outbox(batched.engine, ids["StopThenDrip"]) == []
        assert [row[:2] for row in outbox(batched.engine, ids["Asleep"])] == [("text", "queued")]
        assert [row[:2] for row in outbox(batched.engine, ids["Capped"])] == [("text", "queued")]  # one held back
        assert [row[:2] for row in outbox(batched.engine, ids["Uncapped"])] == [("text", "sent"), ("text", "queued")]
        # At START the second enrolment's text was held back by the first one's, still queued;
        # a day later the second drip's first text goes (the first drip's last one waits its turn).
        assert [row[:2] for row in outbox(batched.engine, ids["Twice"])] == [("text", "sent"), ("text", "queued")]
        broken, drip = enrollments_of(batched.engine, ids["Broken"])
        assert (broken["status"], broken["pc"]) == ("active", 0)
        assert broken["next_run_at"] == START + timedelta(days=1, hours=1) + RETRY_AFTER  # failed on every run
        assert (drip["status"], drip["end_reason"]) == ("done", "completed")
    finally:
        for system in systems:
            system.close()


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender, flows_dir: Path) -> System:
    return make_system(engine, clock, sender, flows_dir)


def test_an_opted_out_contact_gets_no_outbox_row_whatever_runs_before_it_in_the_batch(system: System) -> None:
    s = Scenario(system)
    for n in range(6):
        s.contact(f"Sam{n}", Channel.TEXT)
    system.bus.handle(c.OptOut(s.org, s.ids["Sam2"], Channel.TEXT, s.agents[s.org]))
    for n in range(6):
        s.enrol_in(s.org, f"Sam{n}", "drip", *(("stopper", "drip") if n == 4 else ()))

    report = system.flows.run_due(system.uows, START)

    assert (report.enrollments, report.sent, report.skipped, report.errors) == (8, 5, 2, [])
    assert outbox(system.engine, s.ids["Sam2"]) == []
    assert [row[:2] for row in outbox(system.engine, s.ids["Sam4"])] == [("text", "cancelled")]
    for n in (0, 1, 3, 5):
        [(channel, status, body)] = outbox(system.engine, s.ids[f"Sam{n}"])
        assert (channel, status, body) == ("text", "queued", f"DRIP-TEXT for Sam{n} from Acme.")
    drip_1, stopper, drip_2 = enrollments_of(system.engine, s.ids["Sam4"])
    assert (drip_1["status"], drip_1["end_reason"]) == ("cancelled", "opted out of text")
    # The second drip still has an email to send, so it carries on; its text is refused.
    assert (stopper["status"], drip_2["status"], drip_2["pc"]) == ("done", "active", 4)


def test_a_step_that_fails_in_a_batch_is_retried_later_and_the_others_go(system: System) -> None:
    s = Scenario(system)
    for n in range(4):
        s.contact(f"Sam{n}", Channel.TEXT)
        s.enrol_in(s.org, f"Sam{n}", "broken" if n == 1 else "drip")

    report = system.flows.run_due(system.uows, START)

    assert (report.sent, len(report.errors)) == (3, 1)
    assert "UndefinedError" in report.errors[0]
    assert outbox(system.engine, s.ids["Sam1"]) == []
    [broken] = enrollments_of(system.engine, s.ids["Sam1"])
    assert (broken["status"], broken["pc"], broken["next_run_at"]) == ("active", 0, START + RETRY_AFTER)
    with system.bus.uow() as uow:
        assert [row["step"] for row in uow.enrollments.history(broken["id"])] == ["enrolled", "error"]
    for n in (0, 2, 3):
        [drip] = enrollments_of(system.engine, s.ids[f"Sam{n}"])
        assert (drip["pc"], drip["next_run_at"]) == (4, START + timedelta(days=1))
    assert system.flows.run_due(system.uows, START + RETRY_AFTER - timedelta(minutes=1)).enrollments == 0
    assert len(system.flows.run_due(system.uows, START + RETRY_AFTER).errors) == 1


def test_a_bulk_write_the_database_refuses_falls_back_to_one_enrolment_at_a_time(
        sqlite_engine: Engine, clock: Clock, sender: RecordingSender, flows_dir: Path) -> None:
    system = make_system(sqlite_engine, clock, sender, flows_dir)
    s = Scenario(system)
    for n in range(4):
        s.contact(f"Sam{n}", Channel.TEXT)
        s.enrol_in(s.org, f"Sam{n}", "drip")
    [refused] = enrollments_of(system.engine, s.ids["Sam2"])
    with sqlite_engine.begin() as conn:  # the database itself refuses one enrolment's outbox row
        conn.execute(text(f"CREATE TRIGGER refuse BEFORE INSERT ON messages WHEN NEW.enrollment_id = {refused['id']} "
                          "BEGIN SELECT RAISE(ABORT, 'refused by a test trigger'); END"))

    report = system.flows.run_due(system.uows, START)

    assert (report.enrollments, report.sent, report.steps) == (4, 3, 4)
    assert len(report.errors) == 1 and "refused by a test trigger" in report.errors[0]
    assert outbox(system.engine, s.ids["Sam2"]) == []
    [refused] = enrollments_of(system.engine, s.ids["Sam2"])
    assert (refused["pc"], refused["next_run_at"]) == (0, START + RETRY_AFTER)
    for n in (0, 1, 3):
        assert [row[:2] for row in outbox(system.engine, s.ids[f"Sam{n}"])] == [("text", "queued")]
        with system.bus.uow() as uow:
            [drip] = uow.enrollments.for_contact(s.ids[f"Sam{n}"])
            assert [row["step"] for row in uow.enrollments.history(drip.id)] == ["enrolled", "first_text",
                                                                                    "wait"]


def test_a_consent_from_the_preload_equals_the_stored_one_and_is_the_callers_own(system: System) -> None:
    s = Scenario(system)
    s.contact("Sam", Channel.TEXT)
    s.enrol_in(s.org, "Sam", "drip")
    with SqlUnitOfWork(system.engine) as uow:
        reads = BatchReads.load(uow.conn, uow.enrollments.claim_due(START, 10, uow.skip_locked), {})
        preloaded = PreloadedConsents(uow.conn, reads)
        [address] = [row.value for row in uow.contacts.addresses(s.ids["Sam"]) if row.kind == "phone"]
        consent = preloaded.get(s.org, address, Channel.TEXT)
        assert consent == uow.consents.get(s.org, address, Channel.TEXT)
        assert preloaded.for_addresses(s.org, [address]) == uow.consents.for_addresses(s.org, [address])

        consent.state = State.OPTED_OUT  # as the consent machine changes the consent it fires on
        [listed] = preloaded.for_addresses(s.org, [address])
        listed.version += 1

        again = preloaded.get(s.org, address, Channel.TEXT)
        assert (again.state, again.version) == (State.OPTED_IN, consent.version)
