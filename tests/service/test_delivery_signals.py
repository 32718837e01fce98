"""Issue 12, items 5 to 7 at the service layer: what a provider says after a message left
(SMTP 550, Twilio's delivery reports and carrier errors, bounces and complaints), calls placed by
a dialler, the console's honesty about calls, and WhatsApp's 24-hour window. Real SQLite, the
real SMTP client against aiosmtpd, the test's clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, select

from conftest import Clock, RecordingSender, make_system, new_agent, new_org
from fakes.smtp_server import SmtpSink
from optflow.adapters import orm
from optflow.adapters.senders import ConsoleSender, Router, SmtpSender
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, Purpose, State, TransitionRefused
from optflow.domain.policy import Allow, Defer, Deny
from optflow.domain.records import MessageStatus
from optflow.service_layer.delivery_signals import check_call

PHONE = "+14155550111"
EMAIL = "pat@customer.example"
ORG_EMAIL = "service@acme.example"


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    """On SQLite and on PostgreSQL (when OPTFLOW_TEST_POSTGRES_URL is set)."""
    return make_system(engine, clock, sender)


def agent_of(system: System, org: int) -> Actor:
    return Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")


def message_row(system: System, message_id: int) -> dict[str, object]:
    with system.engine.connect() as conn:
        row = conn.execute(select(orm.messages).where(orm.messages.c.id == message_id)).mappings().one()
    return dict(row)


def ledger_triggers(system: System, org: int, address: str) -> list[str]:
    with system.bus.uow() as uow:
        return [row["trigger"] for row in uow.ledger.entries(org) if row["address"] == address]


# ------------------------------------------------------------------------------ SMTP 550


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def test_an_smtp_550_puts_the_address_on_email_do_not_contact_and_the_next_mail_is_refused(
        engine: Engine, clock: Clock, smtp: SmtpSink) -> None:
    smtp.recipient_replies[EMAIL] = "550 5.1.1 <pat@customer.example>: user unknown"
    sender = Router({Channel.EMAIL: SmtpSender("127.0.0.1", ORG_EMAIL, port=smtp.port, timeout=5)})
    system = make_system(engine, clock, sender)  # type: ignore[arg-type]
    org = new_org(system)
    agent = agent_of(system, org)
    contact = system.bus.handle(c.CreateContact(org, name="Pat", emails=(EMAIL,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.EMAIL, agent, method="web_form"))
    first = system.bus.handle(c.SendMessage(org, contact, Channel.EMAIL, "Your receipt", agent,
                                            purpose=Purpose.TRANSACTIONAL, subject="Receipt"))

    system.dispatcher.run(clock())

    row = message_row(system, first.message_id)
    assert (row["status"], row["error_code"]) == ("failed", "550")
    with system.bus.uow() as uow:
        consent = uow.consents.get(org, EMAIL, Channel.EMAIL)
    assert (consent.state, consent.do_not_contact) == (State.OPTED_IN, "bounced")  # not an opt-out
    assert ledger_triggers(system, org, EMAIL)[-1] == "do_not_contact_on"
    with pytest.raises(TransitionRefused) as refused:
        system.bus.handle(c.SendMessage(org, contact, Channel.EMAIL, "Your next receipt", agent,
                                        purpose=Purpose.TRANSACTIONAL, subject="Receipt"))
    assert refused.value.code == "bounced"
    assert smtp.messages == []


# ------------------------------------------------------------------------------ Twilio reports


@pytest.fixture
def texting(system: System) -> tuple[int, int, Actor]:
    org = new_org(system)
    agent = agent_of(system, org)
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="web_form"))
    return org, contact, agent


def sent_text(system: System, clock: Clock, texting: tuple[int, int, Actor]) -> int:
    org, contact, agent = texting
    message_id = system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Your car is ready", agent)).message_id
    system.dispatcher.run(clock())
    assert message_row(system, message_id)["status"] == "sent"
    return int(message_id)


def report(system: System, org: int, message_id: int, status: str, error: str | None = None) -> MessageStatus:
    provider_id = str(message_row(system, message_id)["provider_id"])
    return system.bus.handle(c.RecordDeliveryStatus(org, provider_id, status, error, message_id)).status


def test_delivery_reports_move_a_message_forward_only(system: System, clock: Clock,
                                                      texting: tuple[int, int, Actor]) -> None:
    message_id = sent_text(system, clock, texting)
    org = texting[0]
    assert report(system, org, message_id, "delivered") is MessageStatus.DELIVERED
    assert report(system, org, message_id, "sent") is MessageStatus.DELIVERED  # late and out of order
    assert message_row(system, message_id)["provider_status"] == "sent"


def test_a_report_that_arrives_before_the_dispatcher_recorded_the_send_is_not_overwritten(
        system: System, clock: Clock, texting: tuple[int, int, Actor]) -> None:
    org, contact, agent = texting
    message_id = system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Hi", agent)).message_id
    claim = system.dispatcher._claim(clock(), 10)
    outbound = system.dispatcher._hand_over(claim, claim.rows[0], _report(), None)
    assert outbound is not None
    system.bus.handle(c.RecordDeliveryStatus(org, "SMearly", "delivered", None, message_id))
    outcome = system.dispatcher._send(outbound, claim.token, 1, _report())
    with system.bus.uow() as uow:
        system.dispatcher._record(uow, claim, outcome)  # type: ignore[arg-type]
        uow.commit()
    row = message_row(system, message_id)
    assert (row["status"], row["provider_id"]) == ("delivered", "SMearly")


def _report():  # type: ignore[no-untyped-def]
    from optflow.service_layer.dispatcher import DeliveryReport

    return DeliveryReport()


@pytest.mark.parametrize(("code", "reason"), [("30004", "carrier_blocked"), ("30005", "unknown_number"),
                                               ("30006", "not_textable")])
def test_a_carrier_error_marks_the_number_not_textable_without_opting_it_out(
        system: System, clock: Clock, texting: tuple[int, int, Actor], code: str, reason: str) -> None:
    org, contact, agent = texting
    message_id = sent_text(system, clock, texting)
    assert report(system, org, message_id, "undelivered", code) is MessageStatus.UNDELIVERED

    with system.bus.uow() as uow:
        consent = uow.consents.get(org, PHONE, Channel.TEXT)
    assert (consent.state, consent.do_not_contact) == (State.OPTED_IN, reason)
    assert ledger_triggers(system, org, PHONE)[-1] == "do_not_contact_on"
    with pytest.raises(TransitionRefused) as refused:
        system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Are you there?", agent))
    assert refused.value.code == reason


def test_21610_in_a_delivery_report_is_the_persons_opt_out(system: System, clock: Clock,
                                                          texting: tuple[int, int, Actor]) -> None:
    org = texting[0]
    message_id = sent_text(system, clock, texting)
    report(system, org, message_id, "failed", "21610")
    with system.bus.uow() as uow:
        consent = uow.consents.get(org, PHONE, Channel.TEXT)
    assert consent.state is State.OPTED_OUT
    with system.bus.uow() as uow:
        last = [row for row in uow.ledger.entries(org) if row["address"] == PHONE][-1]
    assert (last["trigger"], last["method"], last["actor_id"]) == ("opt_out", "carrier", "carrier")


def test_a_report_for_a_message_of_another_org_is_not_found(system: System, clock: Clock,
                                                            texting: tuple[int, int, Actor]) -> None:
    message_id = sent_text(system, clock, texting)
    other = new_org(system, "Other", "+12025550999")
    with pytest.raises(Exception) as refused:
        report(system, other, message_id, "delivered")
    assert getattr(refused.value, "code", None) == "message_not_found"


# ------------------------------------------------------------------------------ bounces, complaints


def test_a_complaint_opts_the_email_out_and_marks_it_complained(system: System) -> None:
    org = new_org(system)
    agent = agent_of(system, org)
    contact = system.bus.handle(c.CreateContact(org, name="Pat", emails=(EMAIL,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.EMAIL, agent, method="web_form"))
    result = system.bus.handle(c.ReportMailFeedback(org, (
        c.MailFeedback(EMAIL.upper(), complaint=True, evidence="abuse"),
        c.MailFeedback("gone@customer.example", complaint=False),
        c.MailFeedback("not an address", complaint=False)), "sendgrid"))
    assert (result.complained, result.bounced, len(result.invalid)) == (1, 1, 1)
    with system.bus.uow() as uow:
        consent = uow.consents.get(org, EMAIL, Channel.EMAIL)
        bounced = uow.consents.get(org, "gone@customer.example", Channel.EMAIL)
    assert (consent.state, consent.do_not_contact) == (State.OPTED_OUT, "complained")
    assert (bounced.state, bounced.do_not_contact) == (State.UNKNOWN, "bounced")
    again = system.bus.handle(c.ReportMailFeedback(org, (c.MailFeedback(EMAIL, complaint=False),), "dsn"))
    assert again.unchanged == 1  # a complaint is not downgraded to a bounce


# ------------------------------------------------------------------------------ calls


def test_the_console_sender_marks_a_call_failed_not_sent(engine: Engine, clock: Clock) -> None:
    system = make_system(engine, clock, ConsoleSender())  # type: ignore[arg-type]
    org = new_org(system)
    agent = agent_of(system, org)
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.CALL, agent, method="verbal"))
    message_id = system.bus.handle(c.SendMessage(org, contact, Channel.CALL, "call about the invoice",
                                                 agent)).message_id

    system.dispatcher.run(clock())

    row = message_row(system, message_id)
    assert row["status"] == "failed" and row["sent_at"] is None
    assert "does not place calls" in str(row["last_error"])


def test_a_dialler_through_a_seven_in_seven_week(system: System, clock: Clock) -> None:
    """One check and one call a day; the 8th call in 7 days waits for the first to age out; the
    person's "do not call me" ends it."""
    org = new_org(system, preset="debt_collection", quiet_hours=False)
    agent = agent_of(system, org)
    contact = system.bus.handle(c.CreateContact(org, name="Dee", phones=(PHONE,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.CALL, agent, method="verbal"))

    def check() -> Allow | Defer | Deny:
        with system.bus.uow() as uow:
            return check_call(uow, org, PHONE, contact, Channel.CALL, Purpose.TRANSACTIONAL, clock())

    first = clock()
    for day in range(7):
        if day:
            clock.advance(days=1)
        assert check() == Allow(), f"day {day}"
        system.bus.handle(c.RecordCallAttempt(org, PHONE, agent, clock(), "no_answer", contact_id=contact))
    clock.advance(hours=3)
    eighth = check()
    assert isinstance(eighth, Defer) and eighth.until == first + timedelta(days=7)
    assert "reg_f_7_in_7" in eighth.reason
    clock.now = first + timedelta(days=7)
    assert check() == Allow()

    result = system.bus.handle(c.RecordCallAttempt(org, PHONE, agent, clock(), "do_not_call", contact_id=contact,
                                                   note="asked us to stop calling"))
    assert result.state is State.OPTED_OUT
    denied = check()
    assert isinstance(denied, Deny) and denied.code == "opted_out"
    with system.bus.uow() as uow:
        assert uow.contacts.get(org, contact).do_not_call
    assert ledger_triggers(system, org, PHONE)[-1] == "opt_out"


# ------------------------------------------------------------------------------ WhatsApp


TEMPLATE_SID = "HX" + "b" * 32


@pytest.fixture
def whatsapp(system: System) -> tuple[int, int, Actor]:
    org = new_org(system, quiet_hours=False, whatsapp_templates={"appointment_reminder": TEMPLATE_SID})
    agent = agent_of(system, org)
    contact = system.bus.handle(c.CreateContact(org, name="Wes", phones=(PHONE,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.WHATSAPP, agent, method="web_form"))
    return org, contact, agent


def free_form(system: System, whatsapp: tuple[int, int, Actor], body: str = "Hello!",
              purpose: Purpose = Purpose.CONVERSATIONAL) -> c.SendMessage:
    org, contact, agent = whatsapp
    return c.SendMessage(org, contact, Channel.WHATSAPP, body, agent, purpose=purpose)


def test_free_form_whatsapp_to_someone_who_never_wrote_is_refused(system: System,
                                                                  whatsapp: tuple[int, int, Actor]) -> None:
    with pytest.raises(TransitionRefused) as refused:
        system.bus.handle(free_form(system, whatsapp, "Big sale this weekend", Purpose.MARKETING))
    assert refused.value.code == "outside_whatsapp_window"


def test_a_whatsapp_conversation_across_the_24_hour_window(system: System, clock: Clock, sender: RecordingSender,
                                                           whatsapp: tuple[int, int, Actor]) -> None:
    org, contact, agent = whatsapp
    system.bus.handle(c.ReceiveInbound(Channel.WHATSAPP, "whatsapp:" + PHONE, "whatsapp:+12025550123",
                                       "When is my appointment?", provider_id="SMwa1"))
    clock.advance(hours=1)
    assert system.bus.handle(free_form(system, whatsapp, "Tuesday at 9")).status == "queued"
    system.dispatcher.run(clock())
    assert [m.body for m in sender.to(PHONE)] == ["Tuesday at 9"]

    # Queued inside the window, handed over after it closed: refused at the hand-over.
    late = system.bus.handle(free_form(system, whatsapp, "Anything else?"))
    clock.advance(hours=23, minutes=30)
    system.dispatcher.run(clock())
    row = message_row(system, late.message_id)
    assert row["status"] == "denied" and "24 hours" in str(row["last_error"])

    with pytest.raises(TransitionRefused) as refused:
        system.bus.handle(free_form(system, whatsapp, "Reminder: Tuesday at 9"))
    assert refused.value.code == "outside_whatsapp_window"

    template = c.SendMessage(org, contact, Channel.WHATSAPP, "", agent,
                             template=c.WhatsAppTemplate("appointment_reminder", {"1": "Tuesday", "2": "9:00"}))
    assert system.bus.handle(template).status == "queued"
    unknown = c.SendMessage(org, contact, Channel.WHATSAPP, "", agent, template=c.WhatsAppTemplate("promo"))
    with pytest.raises(TransitionRefused) as refused:
        system.bus.handle(unknown)
    assert refused.value.code == "template_not_approved"
    system.dispatcher.run(clock())
    sent = sender.to(PHONE)[-1]
    assert sent.body.startswith("[WhatsApp template appointment_reminder]")  # the history's preview
    assert sent.content_sid == TEMPLATE_SID
    assert json.loads(sent.content_variables or "") == {"1": "Tuesday", "2": "9:00"}

    # The customer writes again: the window opens again.
    system.bus.handle(c.ReceiveInbound(Channel.WHATSAPP, "whatsapp:" + PHONE, "whatsapp:+12025550123",
                                       "Thanks!", provider_id="SMwa2"))
    assert system.bus.handle(free_form(system, whatsapp, "You're welcome")).status == "queued"


def test_a_template_is_for_whatsapp_only(system: System, texting: tuple[int, int, Actor]) -> None:
    org, contact, agent = texting
    with pytest.raises(Exception) as refused:
        system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "", agent,
                                        template=c.WhatsAppTemplate("appointment_reminder")))
    assert getattr(refused.value, "code", None) == "template_not_whatsapp"


# ------------------------------------------------------------------------------ lifting do-not-contact


def test_a_supervisor_lifts_a_bounce_but_not_a_complaint_and_a_reset_clears_both(system: System) -> None:
    org = new_org(system)
    supervisor = Actor(ActorKind.AGENT, str(new_agent(system, org, role="supervisor", name="Sue").id), "supervisor")
    agent = agent_of(system, org)
    contact = system.bus.handle(c.CreateContact(org, name="Pat", emails=(EMAIL,))).contact_id
    system.bus.handle(c.ReportMailFeedback(org, (c.MailFeedback(EMAIL, complaint=False),), "dsn"))

    for actor, evidence, code in ((agent, "fixed", "forbidden"), (supervisor, " ", "reason_required")):
        with pytest.raises(Exception) as refused:
            system.bus.handle(c.LiftDoNotContact(org, contact, Channel.EMAIL, actor, evidence=evidence))
        assert getattr(refused.value, "code", None) == code
    system.bus.handle(c.LiftDoNotContact(org, contact, Channel.EMAIL, supervisor, evidence="mailbox restored"))
    with system.bus.uow() as uow:
        assert uow.consents.get(org, EMAIL, Channel.EMAIL).do_not_contact is None
    assert ledger_triggers(system, org, EMAIL)[-2:] == ["do_not_contact_on", "do_not_contact_off"]

    system.bus.handle(c.ReportMailFeedback(org, (c.MailFeedback(EMAIL, complaint=True),), "arf"))
    with pytest.raises(TransitionRefused) as refused:
        system.bus.handle(c.LiftDoNotContact(org, contact, Channel.EMAIL, supervisor, evidence="they said sorry"))
    assert refused.value.code == "complained"
    system.bus.handle(c.ResetConsent(org, contact, Channel.EMAIL, supervisor, evidence="address given to a new owner"))
    with system.bus.uow() as uow:
        consent = uow.consents.get(org, EMAIL, Channel.EMAIL)
    assert (consent.state, consent.do_not_contact) == (State.UNKNOWN, None)



def test_a_report_before_the_hand_over_or_on_a_row_queued_again_leaves_the_dispatchers_record_alone(
        system: System, clock: Clock, texting: tuple[int, int, Actor], sender: RecordingSender) -> None:
    org, contact, agent = texting
    message_id = system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Hi", agent)).message_id
    assert system.bus.handle(c.RecordDeliveryStatus(org, "SMq", "queued", None, message_id)).status \
        is MessageStatus.QUEUED  # still in our outbox: Twilio's "queued" says nothing here
    system.dispatcher.run(clock())
    row = message_row(system, message_id)
    assert (row["status"], row["provider_status"]) == ("sent", None)


def test_the_pre_call_check_defers_to_the_callees_morning(system: System, clock: Clock) -> None:
    org = new_org(system, preset="debt_collection")  # quiet hours on
    agent = agent_of(system, org)
    new_york = "+12125550100"
    contact = system.bus.handle(c.CreateContact(org, name="Ny", phones=(new_york,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.CALL, agent, method="verbal"))
    clock.now = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)  # 03:00 in New York
    with system.bus.uow() as uow:
        decision = check_call(uow, org, new_york, None, Channel.CALL, Purpose.TRANSACTIONAL, clock())
    assert isinstance(decision, Defer) and decision.until == datetime(2026, 11, 24, 13, 0, tzinfo=UTC)
    assert "America/New_York" in decision.reason


def test_the_api_offers_exactly_the_call_outcomes_the_service_knows() -> None:
    from typing import get_args

    from optflow.entrypoints.api_calls import CallOutcome
    from optflow.service_layer.delivery_signals import CALL_OUTCOMES

    assert set(get_args(CallOutcome)) == set(CALL_OUTCOMES)

