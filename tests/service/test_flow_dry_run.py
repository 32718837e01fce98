"""A flow's dry run (`service_layer/flow_dry_run.py`): what it shows is what the real run does,
and it writes nothing. On SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from conftest import REPO, START, Clock, RecordingSender, make_system
from optflow.adapters import orm
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Channel, NotFound
from optflow.entrypoints import scheduler
from optflow.service_layer.flow_dry_run import Answer, DryRun, dry_run
from service.test_flow_runs import EMAIL, PHONE, WELCOME_EMAIL_AT, opt_in, setup_contact

DAY_1 = START + timedelta(days=1)
DAY_3 = START + timedelta(days=3)
TABLES = (orm.messages, orm.enrollments, orm.enrollment_steps, orm.ledger, orm.consents, orm.webhook_deliveries,
          orm.flow_versions)


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    return make_system(engine, clock, sender)


def counts(system: System) -> dict[str, int]:
    with system.engine.connect() as conn:
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in TABLES}


def run(system: System, org: int, contact: int, flow: str = "welcome_drip", at: datetime = START) -> DryRun:
    return dry_run(system.bus.uow, system.flows, org, contact, flow, at)


def test_an_opted_in_contact_sees_the_welcome_drip_with_its_times_and_texts(system: System) -> None:
    org, agent, contact = setup_contact(system)
    opt_in(system, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    before = counts(system)

    result = run(system, org, contact)

    planned = [(step.step, m.channel, m.send_at, m.answer) for step, m in result.messages]
    assert planned == [
        ("steps[2].then[0]", Channel.TEXT, DAY_1, Answer.ALLOW),
        ("steps[2].then[2]", Channel.TEXT, DAY_3, Answer.ALLOW),
        ("welcome_email", Channel.EMAIL, WELCOME_EMAIL_AT, Answer.ALLOW),
    ]
    texts = [m.text for _, m in result.messages]
    assert "Hi Sam, thanks for your interest in Acme" in texts[0]
    assert result.messages[2][1].subject == "Welcome, and what happens next"
    assert [m.address for _, m in result.messages] == [PHONE, PHONE, EMAIL]
    assert [s.action for s in result.steps if s.action == "wait"] == ["wait"] * 3
    assert result.end == "done: completed"
    assert result.enrolment_refused is None
    assert counts(system) == before  # nothing written


def test_quiet_hours_and_a_refusal_are_shown_with_their_reasons(system: System) -> None:
    org, agent, contact = setup_contact(system)
    opt_in(system, org, agent, contact, Channel.TEXT)  # email stays unknown: marketing email is refused
    at = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 03:00 in New York: the day-1 text falls in quiet hours

    result = run(system, org, contact, at=at)

    (_, first), (_, second), (_, email) = result.messages
    assert first.answer is Answer.DEFER and "quiet hours" in (first.reason or "")
    assert first.send_at == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)  # 08:00 in New York
    assert first.code == "quiet_hours"
    assert second.answer is Answer.ALLOW
    assert email.answer is Answer.DENY and email.code == "no_consent"
    assert "Thank you for getting in touch" in email.text  # the text it would have had


def test_the_dry_run_shows_what_the_real_run_then_sends(system: System, clock: Clock,
                                                        sender: RecordingSender) -> None:
    """The same flow, the same contact: the dry run's messages (time, channel, text) are the
    messages the scheduler then hands over, one by one."""
    org, agent, contact = setup_contact(system)
    opt_in(system, org, agent, contact, Channel.TEXT, Channel.EMAIL)
    shown = [(m.send_at, m.channel, m.text) for _, m in run(system, org, contact).messages]

    system.bus.handle(c.RecordEvent(org, "lead.created", contact, {}))
    sent = []
    for moment in [START, DAY_1, DAY_3, WELCOME_EMAIL_AT]:
        clock.now = moment
        seen = len(sender.sent)
        scheduler.run_due(system, moment)
        sent += [(moment, m.channel, m.body) for m in sender.sent[seen:]]
    assert sent == shown


def test_an_opt_in_request_changes_what_later_steps_see(system: System) -> None:
    """A contact with no consent: the drip asks for it (the request is shown), the consent is then
    `requested`, so the welcome texts are skipped by the flow's condition, as in a real run."""
    org, _, contact = setup_contact(system)
    before = counts(system)

    result = run(system, org, contact)

    request = result.steps[0]
    assert request.action == "request_opt_in" and request.outcome == "opt-in request queued"
    [message] = request.messages
    assert message.channel is Channel.TEXT and message.answer is Answer.ALLOW
    assert "would like to reach you" in message.text
    assert [s.action for s in result.steps] == ["request_opt_in", "wait", "wait", "send"]
    assert counts(system) == before


def test_a_contact_the_flow_would_not_enrol_again_is_said_so(system: System) -> None:
    org, agent, contact = setup_contact(system)
    opt_in(system, org, agent, contact, Channel.TEXT)
    system.bus.handle(c.RecordEvent(org, "lead.created", contact, {}))

    result = run(system, org, contact)

    assert result.enrolment_refused is not None and "'never'" in result.enrolment_refused
    assert result.messages  # still shown


def test_an_unknown_flow_or_contact_is_not_found(system: System) -> None:
    org, _, contact = setup_contact(system)
    with pytest.raises(NotFound, match="no flow named 'nope'"):
        run(system, org, contact, flow="nope")
    with pytest.raises(NotFound):
        run(system, org, contact + 100)


def test_actions_that_change_consent_or_post_a_webhook_are_shown_and_undone(
        engine: Engine, clock: Clock, sender: RecordingSender, tmp_path: Path) -> None:
    """The `discontinued` flow opts out, sets DND and ends the automations; a webhook step queues a
    POST. The dry run shows each, and afterwards the consents, the flags, the enrolments, the
    ledger and the webhook outbox are as they were."""
    flows = tmp_path / "flows"
    shutil.copytree(REPO / "flows", flows)
    (flows / "tell_crm.yaml").write_text("""
name: tell_crm
description: Tells the CRM, then says goodbye.
trigger: manual
purpose: transactional
steps:
  - id: notify
    webhook: {url: "https://crm.example.com/hook", body: {status: lost}}
  - id: goodbye
    send: {channel: text, template: welcome_1}
""", encoding="utf-8")
    system = make_system(engine, clock, sender, flows)
    org, agent, contact = setup_contact(system)
    opt_in(system, org, agent, contact, Channel.TEXT)
    system.bus.handle(c.RecordEvent(org, "lead.created", contact, {}))
    before = counts(system)

    gone = run(system, org, contact, flow="discontinued")
    assert [(s.action, s.outcome) for s in gone.steps] == [
        ("opt_out", "opted out"), ("set_dnd", "do not disturb set"), ("remove_from_flows", "removed from other flows")]
    crm = run(system, org, contact, flow="tell_crm")
    assert crm.steps[0].action == "webhook" and crm.steps[0].outcome.startswith("webhook queued")
    assert crm.messages[0][1].answer is Answer.ALLOW

    assert counts(system) == before
    with system.bus.uow(read_only=True) as uow:
        assert uow.consents.get(org, PHONE, Channel.TEXT).state.value == "opted_in"
        assert not uow.contacts.get(org, contact).dnd.all_channels
        assert [e.flow_name for e in uow.enrollments.for_contact(contact)] == ["welcome_drip"]
