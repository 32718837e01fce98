"""Movius MultiLine's opt-in with consent (issue 12, item 8: "Movius").

Movius keeps separate texts for a conversation the customer started ("MT") and one an employee
started ("MO"): the request, the employee's note that it went, the confirmation, the employee's
note of the YES, and those of a refusal. Here the MT side, which had no note to the employee
at all and shared every other text with the MO side."""

from __future__ import annotations

from datetime import timedelta
from itertools import count
from pathlib import Path

import pytest
from sqlalchemy import Engine, update

from conftest import ORG_NUMBER, START, Clock, RecordingSender, make_system, new_agent, new_org, run_cli
from optflow.adapters import db, orm
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, Mode, State
from optflow.domain.reports import ConsentReport
from optflow.service_layer.report_timeline import timeline
from optflow.service_layer.reports import consent_report

PHONE = "+14155552671"
_sids = count(1)


class Line:
    def __init__(self, system: System) -> None:
        self.system = system
        self.org = new_org(system)
        self.agent = Actor(ActorKind.AGENT, str(new_agent(system, self.org, name="Dana").id), "agent")
        self.contact = system.bus.handle(c.CreateContact(self.org, name="Sam", phones=(PHONE,))).contact_id

    def customer_writes(self, body: str) -> list[str]:
        result = self.system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, body,
                                                         f"SM{next(_sids):032x}"))
        return list(result.replies)

    def notes(self) -> list[str]:
        with self.system.bus.uow() as uow:
            rows = uow.messages.for_contact(self.org, self.contact, limit=50)
        return [m.body for m in sorted(rows, key=lambda m: m.id) if m.audience.value == "employee"]


@pytest.fixture
def line(system: System) -> Line:
    return Line(system)


def test_movius_mt_the_employee_learns_the_customer_was_asked_first_and_gets_the_mt_texts(line: Line) -> None:
    replies = line.customer_writes("Hi, is my car ready?")
    assert "To continue by text, reply YES" in replies[0]
    assert line.notes() == ["Sam tried to send you a text message and was asked to opt in first. Their message "
                            "reaches you once they reply YES."]
    replies = line.customer_writes("YES")
    assert replies == ["Acme alerts: opted in, Acme gets your message now. Msg frequency varies. Msg & data rates "
                       "may apply. Reply HELP for help, STOP to end."]
    assert line.notes()[1:] == ["Sam opted in to text messages; you can reply now. Their message: Hi, is my car "
                                "ready?"]


def test_movius_mt_a_customer_who_wrote_first_and_declines_gets_the_mt_refusal_texts(line: Line) -> None:
    line.customer_writes("Hi, is my car ready?")
    replies = line.customer_writes("STOP")
    assert replies == ["Acme alerts: opt-out confirmed, you will get no text messages from Acme. If you change "
                       "your mind, reply START."]
    assert line.notes()[1:] == ['Sam who wrote to you declined to opt in to text messages (replied "STOP"). '
                                "Nothing can be sent to them until they consent."]


def test_movius_mo_keeps_its_own_texts(line: Line) -> None:
    held = line.system.bus.handle(c.SendMessage(line.org, line.contact, Channel.TEXT, "Your car is ready", line.agent))
    assert held.status == "held"
    replies = line.customer_writes("YES")
    assert replies[0].startswith("Acme alerts: you are subscribed to text messages.")
    assert line.notes() == ["Opt-in request sent to Sam by text. Your message is held and will be delivered once "
                            "they reply YES.", "Sam opted in to text messages."]
    with line.system.bus.uow() as uow:
        assert uow.consents.get(line.org, PHONE, Channel.TEXT).state is State.OPTED_IN


DANAS_LINE = "+12025550150"


def test_movius_a_number_can_be_an_employees_own_line_and_speaks_in_their_name(line: Line) -> None:
    from optflow.service_layer import admin

    with line.system.bus.uow() as uow:
        admin.add_number(uow, line.org, DANAS_LINE, int(line.agent.id or 0))
        uow.commit()
    asked = line.system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, DANAS_LINE, "Hi Dana, is my car ready?",
                                                    f"SM{next(_sids):032x}"))
    assert asked.replies[0].startswith("Thanks for contacting Dana at Acme.")
    confirmed = line.system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, DANAS_LINE, "YES",
                                                        f"SM{next(_sids):032x}"))
    assert "Dana gets your message now" in confirmed.replies[0]


def test_movius_the_orgs_shared_number_speaks_in_the_orgs_name(line: Line) -> None:
    assert line.customer_writes("Hello?")[0].startswith("Thanks for contacting Acme.")


def test_movius_an_employees_line_is_added_from_the_cli(tmp_path: Path) -> None:
    assert run_cli(tmp_path, "init").returncode == 0
    assert run_cli(tmp_path, "agents", "add", "Dana", "--role", "agent").returncode == 0
    added = run_cli(tmp_path, "orgs", "add-number", DANAS_LINE, "--agent", "Dana")
    assert added.returncode == 0, added.stderr
    assert "own line" in added.stdout
    unknown = run_cli(tmp_path, "orgs", "add-number", "+12025550151", "--agent", "Nobody")
    assert unknown.returncode != 0 and "Nobody" in unknown.stderr
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with SqlUnitOfWork(engine) as uow:
        assert uow.orgs.number_owner(DANAS_LINE) is not None
        assert uow.orgs.number_owner("+12025550151") is None
    engine.dispose()


# ------------------------------------------------------------------------------------- reports


@pytest.fixture
def db_line(engine: Engine, clock: Clock, sender: RecordingSender) -> Line:
    """A Movius line on SQLite and on PostgreSQL: the reports' counting is SQL."""
    return Line(make_system(engine, clock, sender))



def _record_opt_in(system: System, org: int, agent: Actor, phone: str) -> int:
    contact = system.bus.handle(c.CreateContact(org, name="Kim", phones=(phone,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="web_form"))
    return contact


def _set_text_mode(system: System, org: int, mode: str) -> None:
    from optflow.service_layer import admin

    with system.bus.uow() as uow:
        admin.update_settings(uow, system.services.renderer, org, {"modes": {"text": mode}})
        uow.commit()


def _report(system: System, org: int, **options: object) -> ConsentReport:
    with system.bus.uow(read_only=True) as uow:
        return consent_report(uow, org, START - timedelta(days=1), START + timedelta(days=1),
                              **options)  # type: ignore[arg-type]


def test_movius_reports_count_each_opt_in_under_the_mode_in_force_when_it_happened(db_line: Line) -> None:
    system = db_line.system
    _record_opt_in(system, db_line.org, db_line.agent, "+14155550101")  # the org texts in consent mode
    _set_text_mode(system, db_line.org, "disclaimer")
    _record_opt_in(system, db_line.org, db_line.agent, "+14155550102")
    report = _report(system, db_line.org)
    assert {mode: counts.opt_ins for mode, counts in report.by_mode.items()} == {Mode.CONSENT: 1, Mode.DISCLAIMER: 1}
    assert report.modes[Channel.TEXT] is Mode.DISCLAIMER and report.entries_without_mode == 0
    assert {(m.mode, m.method): m.counts.opt_ins for m in report.by_method} == {
        (Mode.CONSENT, "web_form"): 1, (Mode.DISCLAIMER, "web_form"): 1}


def test_movius_every_consent_entry_keeps_the_mode_of_its_moment_whichever_door(db_line: Line) -> None:
    db_line.customer_writes("Hi, is my car ready?")  # the customer-started request
    _set_text_mode(db_line.system, db_line.org, "disclaimer")
    db_line.customer_writes("YES")
    db_line.customer_writes("STOP")
    with db_line.system.bus.uow(read_only=True) as uow:
        entries = [(row["trigger"], row["mode"]) for row in uow.ledger.entries(db_line.org)]
    assert entries == [("request_opt_in", "consent"), ("accept", "disclaimer"), ("opt_out", "disclaimer")]


def test_movius_entries_made_before_the_mode_was_kept_count_under_the_current_mode_and_are_counted(
        db_line: Line) -> None:
    system = db_line.system
    _record_opt_in(system, db_line.org, db_line.agent, "+14155550101")
    with SqlUnitOfWork(system.engine) as uow:
        before = uow.ledger.verify(db_line.org)
        # As the entries of a ledger written before revision 0011: no mode beside them.
        changed = uow.conn.execute(update(orm.ledger).where(orm.ledger.c.org_id == db_line.org,
                                                            orm.ledger.c.mode.is_not(None)).values(mode=None))
        assert changed.rowcount == 1
        uow.commit()
    _set_text_mode(system, db_line.org, "auto")
    report = _report(system, db_line.org)
    assert {mode: counts.opt_ins for mode, counts in report.by_mode.items()} == {Mode.AUTO: 1}
    assert report.entries_without_mode == 1
    with system.bus.uow(read_only=True) as uow:
        after = uow.ledger.verify(db_line.org)
    assert not before.problems and not after.problems and after.entries == before.entries  # the mode is not hashed


def test_movius_reports_filter_by_mode(db_line: Line) -> None:
    system = db_line.system
    _record_opt_in(system, db_line.org, db_line.agent, "+14155550101")
    _set_text_mode(system, db_line.org, "disclaimer")
    _record_opt_in(system, db_line.org, db_line.agent, "+14155550102")
    _record_opt_in(system, db_line.org, db_line.agent, "+14155550103")
    consent = _report(system, db_line.org, mode=Mode.CONSENT)
    disclaimer = _report(system, db_line.org, mode=Mode.DISCLAIMER)
    assert (consent.totals.opt_ins, disclaimer.totals.opt_ins) == (1, 2)
    assert list(consent.by_mode) == [Mode.CONSENT] and list(disclaimer.by_mode) == [Mode.DISCLAIMER]
    assert _report(system, db_line.org, mode=Mode.AUTO).totals.opt_ins == 0
    last = START.date()
    with system.bus.uow(read_only=True) as uow:  # the console's chart counts the same way
        charted = timeline(uow, db_line.org, last, last, mode=Mode.CONSENT).totals()
    assert charted["opt_ins"] == 1


SUB_ORG_NUMBER = "+12025550188"


def test_movius_a_parent_orgs_report_includes_its_sub_orgs_each_under_its_own_mode(db_line: Line) -> None:
    from optflow.service_layer import admin

    system = db_line.system
    with system.bus.uow() as uow:
        branch = admin.create_org(uow, "Acme West", system.clock(), parent_id=db_line.org,
                                  settings={"modes": {"text": "disclaimer"}}, numbers=(SUB_ORG_NUMBER,))
        uow.commit()
    west_agent = Actor(ActorKind.AGENT, str(new_agent(system, branch, name="Lee").id), "agent")
    _record_opt_in(system, db_line.org, db_line.agent, "+14155550101")
    _record_opt_in(system, branch, west_agent, "+14155550102")
    report = _report(system, db_line.org)
    assert report.totals.opt_ins == 2
    assert {mode: counts.opt_ins for mode, counts in report.by_mode.items()} == {Mode.CONSENT: 1, Mode.DISCLAIMER: 1}
    assert [(org.org_id, org.name, org.counts.opt_ins) for org in report.by_org] == [
        (db_line.org, "Acme", 1), (branch, "Acme West", 1)]
    alone = _report(system, db_line.org, include_sub_orgs=False)
    assert alone.totals.opt_ins == 1 and [org.org_id for org in alone.by_org] == [db_line.org]
    # A sub-org's own report is its own.
    assert _report(system, branch).totals.opt_ins == 1
    with system.bus.uow(read_only=True) as uow:
        charted = timeline(uow, db_line.org, START.date(), START.date()).totals()
    assert charted["opt_ins"] == 2
