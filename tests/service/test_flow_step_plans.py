"""What `FlowEngine.execute` remembers between enrolments and what it reads again.

A plan that reads no condition (the path from the enrolment's pc to its next action or wait
holds no `if`) is remembered by flow, flow version, pc, time zone and `now`: each test below
puts two enrolments in one batch that differ in exactly one of those, so a plan remembered
under too small a key gives one of them the other's wait. The facts conditions read are read
once per run and again after any action other than a send, which may have changed them.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from conftest import START, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import orm
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel

NEW_YORK = "America/New_York"  # START, 18:00 UTC on Monday 23 November 2026, is 13:00 there
TOKYO = "Asia/Tokyo"  # and 03:00 on Tuesday there


def flow_yaml(name: str, steps: str) -> str:
    return (f"name: {name}\ndescription: Test flow {name}.\ntrigger: {{event: {name}.start}}\n"
            f"purpose: transactional\nreenroll: always\nsteps:\n{steps}")


NOTE = "  - send: {channel: text, template: note}\n"
FLOWS = {
    "morning": flow_yaml("morning", '  - wait: {until: {time: "09:00"}}\n' + NOTE),
    "ladder": flow_yaml("ladder", NOTE + "  - wait: 1d\n" + NOTE + "  - wait: 3d\n" + NOTE),
    "pause": flow_yaml("pause", "  - wait: 1d\n" + NOTE),
    "tidy": flow_yaml("tidy", "  - if: {consent: {channel: email, state: opted_in}}\n    then:\n"
                              "      - opt_out: {channels: [email]}\n"
                              "  - if: {consent: {channel: email, state: opted_out}}\n    then:\n  " + NOTE),
    "counting": flow_yaml("counting", "  - send: {channel: text, template: counting}\n"),
}
TEMPLATES = {"note.j2": "NOTE for {{ contact_name }}.",
             "counting.j2": "Counting {% for n in range(3) %}{{ n }}{% endfor %}."}


def write_flows(target: Path, flows: dict[str, str]) -> Path:
    (target / "templates").mkdir(parents=True, exist_ok=True)
    for name, source in flows.items():
        (target / f"{name}.yaml").write_text(source, encoding="utf-8")
    for name, source in TEMPLATES.items():
        (target / "templates" / name).write_text(source, encoding="utf-8")
    return target


class Contacts:
    """Contacts of one org, opted in to texts and emails, enrolled without running."""

    def __init__(self, system: System) -> None:
        self.system = system
        self.org = new_org(system, "Acme")
        self.agent = Actor(ActorKind.AGENT, str(new_agent(system, self.org).id))
        self.count = 0

    def new(self, name: str, time_zone: str = NEW_YORK) -> int:
        self.count += 1
        contact = self.system.bus.handle(c.CreateContact(
            self.org, name=name, phones=(f"+1212555{self.count:04d}",),
            emails=(f"{name.lower()}@example.com",), time_zone=time_zone)).contact_id
        for channel in (Channel.TEXT, Channel.EMAIL):
            self.system.bus.handle(c.RecordOptIn(self.org, contact, channel, self.agent, method="web_form"))
        return contact

    def enrol(self, contact: int, flow: str, at: datetime, system: System | None = None) -> int:
        system = system or self.system
        with system.bus.uow() as uow:
            enrollment_id = system.flows.enroll(uow, self.org, contact, system.flows.flows[flow], {}, at,
                                                run_now=False)
            uow.commit()
        assert enrollment_id is not None
        return enrollment_id


def enrollment(engine: Engine, enrollment_id: int) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(orm.enrollments).where(orm.enrollments.c.id == enrollment_id)).mappings().one()
    return dict(row)


def bodies(engine: Engine, enrollment_id: int) -> list[str]:
    m = orm.messages.c
    with engine.connect() as conn:
        return list(conn.execute(select(m.body).where(m.enrollment_id == enrollment_id).order_by(m.id)).scalars())


@pytest.fixture
def flows_dir(tmp_path: Path) -> Path:
    return write_flows(tmp_path / "flows", FLOWS)


@pytest.fixture
def system(sqlite_engine: Engine, clock: Clock, sender: RecordingSender, flows_dir: Path) -> System:
    return make_system(sqlite_engine, clock, sender, flows_dir)


def test_each_contact_of_a_batch_waits_for_its_own_local_morning(system: System) -> None:
    contacts = Contacts(system)
    new_york = contacts.enrol(contacts.new("Nina", NEW_YORK), "morning", START)
    tokyo = contacts.enrol(contacts.new("Taro", TOKYO), "morning", START)

    assert system.flows.run_due(system.uows, START).enrollments == 2

    assert enrollment(system.engine, new_york)["next_run_at"] == datetime.fromisoformat("2026-11-24T14:00+00:00")
    assert enrollment(system.engine, tokyo)["next_run_at"] == datetime.fromisoformat("2026-11-24T00:00+00:00")


def test_a_wait_counts_from_the_run_that_reaches_it(system: System) -> None:
    contacts = Contacts(system)
    early = contacts.enrol(contacts.new("Early"), "pause", START)
    later = contacts.enrol(contacts.new("Later"), "pause", START + timedelta(hours=1))

    assert system.flows.run_due(system.uows, START).enrollments == 1
    assert system.flows.run_due(system.uows, START + timedelta(hours=1)).enrollments == 1

    assert enrollment(system.engine, early)["next_run_at"] == START + timedelta(days=1)
    assert enrollment(system.engine, later)["next_run_at"] == START + timedelta(days=1, hours=1)


def test_enrolments_at_different_steps_of_a_flow_each_wait_their_own_step(system: System) -> None:
    contacts = Contacts(system)
    ahead = contacts.enrol(contacts.new("Ahead"), "ladder", START - timedelta(days=1))
    system.flows.run_due(system.uows, START - timedelta(days=1))  # ahead: first text, then a day's wait
    starting = contacts.enrol(contacts.new("Starting"), "ladder", START)

    assert system.flows.run_due(system.uows, START).enrollments == 2

    assert [enrollment(system.engine, ahead)[k] for k in ("pc", "next_run_at")] == [4, START + timedelta(days=3)]
    assert [enrollment(system.engine, starting)[k] for k in ("pc", "next_run_at")] == [2, START + timedelta(days=1)]
    assert bodies(system.engine, ahead) == ["NOTE for Ahead."] * 2


def test_enrolments_on_two_versions_of_a_flow_each_wait_their_own_version(
        sqlite_engine: Engine, clock: Clock, sender: RecordingSender, tmp_path: Path) -> None:
    flows_dir = write_flows(tmp_path / "flows", {"pause": FLOWS["pause"]})
    before = make_system(sqlite_engine, clock, sender, flows_dir)
    contacts = Contacts(before)
    old = contacts.enrol(contacts.new("Old"), "pause", START)
    write_flows(flows_dir, {"pause": FLOWS["pause"].replace("wait: 1d", "wait: 2d")})
    after = make_system(sqlite_engine, clock, sender, flows_dir)  # the redeploy, same database
    new = contacts.enrol(contacts.new("New"), "pause", START, system=after)

    assert after.flows.run_due(after.uows, START).enrollments == 2

    assert enrollment(after.engine, old)["next_run_at"] == START + timedelta(days=1)
    assert enrollment(after.engine, new)["next_run_at"] == START + timedelta(days=2)


def test_a_condition_after_an_action_reads_what_the_action_changed(system: System) -> None:
    contacts = Contacts(system)
    tidied = contacts.enrol(contacts.new("Tess"), "tidy", START)

    report = system.flows.run_due(system.uows, START)

    assert (report.sent, report.errors) == (1, [])
    assert bodies(system.engine, tidied) == ["NOTE for Tess."]
    assert enrollment(system.engine, tidied)["status"] == "done"


def test_a_content_template_may_use_the_template_languages_own_functions(system: System) -> None:
    contacts = Contacts(system)
    counted = contacts.enrol(contacts.new("Cleo"), "counting", START)

    system.flows.run_due(system.uows, START)

    assert bodies(system.engine, counted) == ["Counting 012."]
