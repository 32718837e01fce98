"""A flow whose trigger is `consent: opted_out` runs when a consent of the contact becomes
opted out (`flows validate` accepts the trigger and docs/flows.md documents it; the engine used to
skip it). Its steps still cannot message the contact on the channel they left: the policy refuses."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from conftest import ORG_NUMBER, Clock, RecordingSender, make_system, new_org
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel
from optflow.domain.records import EnrollmentStatus

PHONE = "+14155552671"
AGENT = Actor(ActorKind.AGENT, "1")


def write_flow(directory: Path) -> Path:
    (directory / "templates").mkdir(parents=True)
    (directory / "templates" / "sorry_to_see_you_go.j2").write_text("Sorry to see you go!", encoding="utf-8")
    (directory / "tell_crm_opt_out.yaml").write_text("""
name: tell_crm_opt_out
description: Tells the CRM that a contact opted out of texts.
trigger:
  consent: opted_out
  channel: text
purpose: transactional
steps:
  - webhook:
      url: http://127.0.0.1:9/crm/opt-outs
      body: {what: opted_out}
  - send: {channel: text, template: sorry_to_see_you_go}
""", encoding="utf-8")
    return directory


def test_a_stop_enrols_the_contact_in_a_flow_triggered_by_opted_out(
        sqlite_engine: Engine, clock: Clock, sender: RecordingSender, tmp_path: Path) -> None:
    system: System = make_system(sqlite_engine, clock, sender, write_flow(tmp_path / "flows"))
    org = new_org(system)
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SM-stop"))

    with system.bus.uow(read_only=True) as uow:
        enrollments = uow.enrollments.for_contact(contact, tuple(EnrollmentStatus))
        [enrollment] = enrollments
        deliveries = uow.webhook_deliveries.for_enrollment(enrollment.id)
        outcomes = [step["outcome"] for step in uow.enrollments.history(enrollment.id)]
    assert enrollment.flow_name == "tell_crm_opt_out"
    [delivery] = deliveries
    assert delivery.url == "http://127.0.0.1:9/crm/opt-outs"
    assert '"what": "opted_out"' in delivery.payload
    # The send step is refused: the contact opted out of texts.
    assert outcomes == ["started", f"webhook queued (delivery {delivery.id})", "skipped: the contact opted out on text"]
    system.dispatcher.run(clock())
    assert sender.to(PHONE) == []  # the confirmation went as the webhook's reply; nothing else goes


def test_an_opt_out_of_every_channel_does_not_end_the_flow_it_started(
        sqlite_engine: Engine, clock: Clock, sender: RecordingSender, tmp_path: Path) -> None:
    """An opt-out of every channel ends every enrolment of the contact; the one it starts itself
    (a flow triggered by `opted_out` that waits before telling the CRM) runs on."""
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "later_to_crm.yaml").write_text("""
name: later_to_crm
description: Tells the CRM an hour after a contact opted out.
trigger:
  consent: opted_out
  channel: text
purpose: transactional
steps:
  - wait: 1h
  - webhook:
      url: http://127.0.0.1:9/crm/opt-outs
      body: {what: opted_out}
""", encoding="utf-8")
    system = make_system(sqlite_engine, clock, sender, flows)
    org = new_org(system)
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,), emails=("sam@example.com",))
                                ).contact_id
    system.bus.handle(c.OptOut(org, contact, Channel.TEXT, AGENT, all_channels=True, method="verbal"))
    with system.bus.uow(read_only=True) as uow:
        [enrollment] = uow.enrollments.for_contact(contact, tuple(EnrollmentStatus))
        assert uow.consents.get(org, "sam@example.com", Channel.EMAIL).state == "opted_out"
    assert enrollment.status == "active", enrollment.end_reason

    system.flows.run_due(system.uows, clock.advance(hours=1))
    with system.bus.uow(read_only=True) as uow:
        [delivery] = uow.webhook_deliveries.for_enrollment(enrollment.id)
        [enrollment] = uow.enrollments.for_contact(contact, tuple(EnrollmentStatus))
    assert '"what": "opted_out"' in delivery.payload
    assert enrollment.status == "done"
