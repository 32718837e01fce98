"""Whole conversations against the running server: the customer's side over the signed Twilio
webhook, the employee's side as commands on the server's database (what the API and the agent
console do), and the scheduler in the server delivering the outbox.

Each test makes its own org (its own number and settings) so settings never leak between tests;
expected texts are rendered from the packaged templates with the same variables the server uses.
"""

from __future__ import annotations

import re
import time
from typing import TYPE_CHECKING, Any

import pytest

from e2e.helpers import twiml_messages
from optflow.domain import commands as c
from optflow.domain.model import Actor, Channel, DomainError, State
from optflow.domain.pin import PinRejected
from optflow.service_layer.handlers import template_variables

if TYPE_CHECKING:
    from e2e.conftest import Library, Server, TestOrg

pytestmark = pytest.mark.e2e

DELIVERED = ("queued", "sending", "sent")  # on its way or gone: the scheduler ticks every 2 s


def text(library: Library, org: TestOrg, template: str, contact_id: int | None = None,
         actor: Actor | None = None, channel: Channel = Channel.TEXT, language: str = "en", **extra: Any) -> str:
    """What the packaged `template` says in this conversation, in `language`."""
    with library.system.bus.uow() as uow:
        settings = uow.orgs.settings(org.id)
        contact = uow.contacts.get(org.id, contact_id) if contact_id is not None else None
        variables = template_variables(uow, org.id, settings, channel, contact, actor, language=language, **extra)
    return library.system.services.renderer.render(template, variables, language=language).text


def new_contact(library: Library, org: TestOrg, *, emails: tuple[str, ...] = ()) -> tuple[int, str]:
    number = library.new_number()
    result = library.handle(c.CreateContact(org_id=org.id, name="Casey", phones=(number,), emails=emails))
    return result.contact_id, number


def employee_notes(library: Library, org: TestOrg, number: str) -> list[str]:
    return [row["body"] for row in library.messages(org.id, number, audience="employee")]


def wait_for_status(library: Library, org: TestOrg, number: str, message_id: int, status: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        [row] = [r for r in library.messages(org.id, number) if r["id"] == message_id]
        if row["status"] == status:
            return
        time.sleep(0.2)
    raise AssertionError(f"message {message_id} is {row['status']}, not {status}, after 10 s")


# ------------------------------------------------------------------------------------- consent mode


def test_employee_started_first_message_is_held_until_the_customer_says_yes(
        server: Server, library: Library) -> None:
    org = library.new_org()
    contact_id, number = new_contact(library, org)
    sent = library.handle(c.SendMessage(org.id, contact_id, Channel.TEXT, "Your car is ready for pickup.", org.agent))
    assert sent.status == "held"
    [request] = library.messages(org.id, number, audience="customer", kind="opt_in_request")
    assert request["status"] in DELIVERED
    assert request["body"] == text(library, org, "customer/opt_in_request.employee_started", contact_id, org.agent)
    assert employee_notes(library, org, number) == [text(library, org, "employee/opt_in_request_sent", contact_id,
                                                         held_message="Your car is ready for pickup.")]
    assert [r["status"] for r in library.messages(org.id, number, body="Your car is ready for pickup.")] == ["held"]

    replies = twiml_messages(server.sms(number, "Yes", To=org.number))

    assert replies == [text(library, org, "customer/opt_in_confirmation", contact_id)]
    assert library.consent(org.id, number).state is State.OPTED_IN
    assert employee_notes(library, org, number)[1:] == [
        text(library, org, "employee/contact_opted_in", contact_id, held_message="")]
    wait_for_status(library, org, number, sent.message_id, "sent")  # the server's scheduler delivered it


def test_employee_started_then_stop_tells_the_employee_and_sends_nothing(server: Server, library: Library) -> None:
    org = library.new_org()
    contact_id, number = new_contact(library, org)
    held = library.handle(c.SendMessage(org.id, contact_id, Channel.TEXT, "About your invoice", org.agent))

    replies = twiml_messages(server.sms(number, "STOP", To=org.number))

    assert replies == [text(library, org, "customer/opt_out_confirmation", contact_id)]
    assert library.consent(org.id, number).state is State.OPTED_OUT
    assert employee_notes(library, org, number)[-1] == text(
        library, org, "employee/contact_opted_out", contact_id, reason='replied "STOP"')
    [row] = [r for r in library.messages(org.id, number) if r["id"] == held.message_id]
    assert row["status"] not in DELIVERED
    with pytest.raises(DomainError) as refused:
        library.handle(c.SendMessage(org.id, contact_id, Channel.TEXT, "Are you there?", org.agent))
    assert refused.value.code == "opted_out"
    assert all(r["status"] not in DELIVERED
               for r in library.messages(org.id, number, direction="out", audience="customer", kind="normal"))


def test_customer_started_message_reaches_the_employee_after_yes(server: Server, library: Library) -> None:
    org = library.new_org()
    contact_id, number = new_contact(library, org)

    first = twiml_messages(server.sms(number, "Hi, is my car ready?", To=org.number))

    assert first == [text(library, org, "customer/opt_in_request.customer_started", contact_id)]
    [inbound] = library.messages(org.id, number, direction="in")
    assert inbound["status"] == "held"
    assert library.consent(org.id, number).state is State.REQUESTED
    assert employee_notes(library, org, number) == [text(  # Movius's "MT" note: asked first
        library, org, "employee/opt_in_request_sent.customer_started", contact_id, held_message="Hi, is my car ready?")]

    second = twiml_messages(server.sms(number, "YES", To=org.number))

    assert second == [text(library, org, "customer/opt_in_confirmation.customer_started", contact_id)]
    statuses = {row["body"]: row["status"] for row in library.messages(org.id, number, direction="in")}
    assert statuses["Hi, is my car ready?"] == "delivered"
    assert employee_notes(library, org, number)[-1] == text(
        library, org, "employee/contact_opted_in.customer_started", contact_id, held_message="Hi, is my car ready?")


# ------------------------------------------------------------------------------------- disclaimer mode


def test_disclaimer_mode_lets_messages_flow_with_a_notice_first_and_stop_still_works(
        server: Server, library: Library) -> None:
    org = library.new_org(modes={"text": "disclaimer"})
    contact_id, number = new_contact(library, org)
    notice = text(library, org, "customer/disclaimer", contact_id, org.agent)

    first = library.handle(c.SendMessage(org.id, contact_id, Channel.TEXT, "Your estimate is ready.", org.agent))
    second = library.handle(c.SendMessage(org.id, contact_id, Channel.TEXT, "It is $120.", org.agent))
    bodies = {row["id"]: row["body"] for row in library.messages(org.id, number, direction="out")}
    assert (first.status, second.status) == ("queued", "queued")
    assert bodies[first.message_id] == f"Your estimate is ready.\n\n{notice}"
    assert bodies[second.message_id] == "It is $120."

    assert twiml_messages(server.sms(number, "Thanks!", To=org.number)) == []
    assert library.messages(org.id, number, direction="in", body="Thanks!")[0]["status"] == "delivered"

    assert twiml_messages(server.sms(number, "stop", To=org.number)) == [
        text(library, org, "customer/opt_out_confirmation", contact_id)]
    assert library.consent(org.id, number).state is State.OPTED_OUT
    with pytest.raises(DomainError):
        library.handle(c.SendMessage(org.id, contact_id, Channel.TEXT, "One more thing", org.agent))


# ------------------------------------------------------------------------------------- PIN


def test_pin_step_after_yes_needs_the_right_code(server: Server, library: Library) -> None:
    org = library.new_org(pin_required=True)
    contact_id, number = new_contact(library, org)
    library.handle(c.RequestOptIn(org.id, contact_id, Channel.TEXT, org.agent))

    [pin_message] = twiml_messages(server.sms(number, "YES", To=org.number))

    [pin] = re.findall(r"\b\d{6}\b", pin_message)
    assert pin_message == text(library, org, "customer/pin", contact_id, pin=pin, pin_valid_minutes=10)
    consent = library.consent(org.id, number)
    assert (consent.state, consent.awaiting_pin) == (State.REQUESTED, True)
    wrong = pin[:-1] + str((int(pin[-1]) + 1) % 10)
    with pytest.raises(PinRejected):
        library.handle(c.ConfirmPin(org.id, contact_id, Channel.TEXT, org.agent, pin=wrong))
    consent = library.consent(org.id, number)
    assert (consent.state, consent.pin_attempts) == (State.REQUESTED, 1)

    library.handle(c.ConfirmPin(org.id, contact_id, Channel.TEXT, org.agent, pin=pin))

    assert library.consent(org.id, number).state is State.OPTED_IN
    assert [e["trigger"] for e in library.ledger(org.id, number)] == ["request_opt_in", "accept", "confirm_pin"]


# ------------------------------------------------------------------------------------- opt-out rules


def test_stop_on_text_leaves_email_consent_alone(server: Server, library: Library) -> None:
    org = library.new_org()
    email = f"casey{library.new_number()[-7:]}@example.net"
    contact_id, number = new_contact(library, org, emails=(email,))
    for channel in (Channel.TEXT, Channel.EMAIL):
        library.handle(c.RecordOptIn(org.id, contact_id, channel, org.agent, method="web_form"))

    twiml_messages(server.sms(number, "STOP", To=org.number))

    assert library.consent(org.id, number, Channel.TEXT).state is State.OPTED_OUT
    assert library.consent(org.id, email, Channel.EMAIL).state is State.OPTED_IN


def test_an_opt_out_is_never_lost_to_a_broken_template_override(server: Server, library: Library) -> None:
    broken = "{{ program_name }}: bye {% if %}"
    org = library.new_org(templates={"customer/opt_out_confirmation": broken})
    contact_id, number = new_contact(library, org)

    replies = twiml_messages(server.sms(number, "STOP", To=org.number))

    assert replies == [text(library, org, "customer/opt_out_confirmation", contact_id)]  # the packaged default
    assert library.consent(org.id, number).state is State.OPTED_OUT
    assert [e["trigger"] for e in library.ledger(org.id, number)] == ["opt_out"]
