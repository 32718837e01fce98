"""The language of what optflow sends, through the handlers: replies, texts it sends on its own
(opt-in requests, confirmations after a PIN), notes to the employee, and what it learns about a
contact's language."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conftest import ORG_NUMBER, RecordingSender, new_agent, new_org
from optflow.adapters import orm
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, Intent, State
from optflow.service_layer.handlers import InboundResult

PHONE = "+14155552671"
MEXICAN = "+525512345678"


def sms(system: System, body: str, frm: str = PHONE) -> InboundResult:
    result = system.bus.handle(c.ReceiveInbound(Channel.TEXT, frm, ORG_NUMBER, body, None))
    assert isinstance(result, InboundResult)
    return result


def contact_language(system: System, contact_id: int) -> str | None:
    with system.engine.connect() as conn:
        return conn.execute(select(orm.contacts.c.language).where(orm.contacts.c.id == contact_id)).scalar_one()


def employee_notes(system: System) -> list[str]:
    query = select(orm.messages.c.body).where(orm.messages.c.audience == "employee").order_by(orm.messages.c.id)
    with system.engine.connect() as conn:
        return list(conn.execute(query).scalars())


@pytest.fixture
def org(system: System) -> int:
    return new_org(system, program_name="Acme alerts")


@pytest.fixture
def agent(system: System, org: int) -> Actor:
    return Actor(ActorKind.AGENT, str(new_agent(system, org).id))


def new_contact(system: System, org: int, language: str | None = None) -> int:
    return system.bus.handle(c.CreateContact(org, name="Lupe", phones=(PHONE,), language=language)).contact_id


def test_a_keyword_decides_the_language_over_the_contacts(system: System, org: int) -> None:
    new_contact(system, org, language="fr")
    [reply] = sms(system, "ALTO").replies
    assert "se ha dado de baja" in reply


def test_the_customers_words_teach_the_contact_its_language(system: System, org: int) -> None:
    contact = new_contact(system, org)
    assert sms(system, "Muchas gracias, hasta mañana").intent is Intent.OTHER
    assert contact_language(system, contact) == "es"
    [reply] = sms(system, "STOP").replies
    assert "se ha dado de baja" in reply
    assert contact_language(system, contact) == "es"  # STOP says nothing about the language


def test_a_message_that_does_not_tell_keeps_the_contacts_language(system: System, org: int) -> None:
    contact = new_contact(system, org, language="pt")
    sms(system, "ok")
    assert contact_language(system, contact) == "pt"
    [reply] = sms(system, "HELP").replies
    assert "Podem ser cobradas tarifas de mensagens e dados" in reply


def test_an_unknown_sender_is_answered_in_the_keywords_language_and_nothing_is_stored(system: System,
                                                                                       org: int) -> None:
    result = sms(system, "AIDE")
    assert result.contact_id is None and "Des frais de messages" in result.replies[0]


def test_texts_optflow_sends_on_its_own_use_the_contacts_language(system: System, org: int, agent: Actor,
                                                                 sender: RecordingSender) -> None:
    contact = new_contact(system, org, language="es")
    system.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
    system.dispatcher.run(system.clock())
    [request] = sender.to(PHONE)
    assert "Responda SI para aceptar o STOP para cancelar" in request.body
    [confirmation] = sms(system, "SI").replies  # the Spanish opt-in word the request asked for
    assert "se ha suscrito a los mensajes por SMS" in confirmation
    assert "La frecuencia de los mensajes varía" in confirmation  # the default setting, translated


def test_notes_to_the_employee_are_in_the_orgs_default_language(system: System, org: int) -> None:
    new_contact(system, org, language="es")
    sms(system, "ALTO")
    assert employee_notes(system) == ['Lupe opted out of text messages (replied "ALTO"). Nothing more will be sent '
                                      "to them by text."]


def test_an_org_in_spanish_answers_an_unknown_language_in_spanish_with_its_own_override(system: System) -> None:
    new_org(system, default_language="es", templates={
        "customer/opt_out_confirmation": "{{ org_name }}: baja confirmada. {{ start_word }} para volver.",
    })
    assert sms(system, "STOP").replies == ("Acme: baja confirmada. START para volver.",)
    # An English speaker gets the packaged English text, not the org's Spanish one.
    assert "you are unsubscribed" in sms(system, "please stop texting me", frm="+14155552672").replies[0]


def test_keywords_of_a_country_apply_to_its_numbers_only(system: System) -> None:
    new_org(system, keywords_by_country={"MX": {"es": {"opt_out": ["MOTORSBAJA"]}}})
    mexican = sms(system, "MOTORSBAJA", frm=MEXICAN)
    assert mexican.intent is Intent.OPT_OUT and mexican.state is State.OPTED_OUT
    assert "se ha dado de baja" in mexican.replies[0]
    american = sms(system, "MOTORSBAJA", frm=PHONE)
    assert american.intent is Intent.OTHER and american.state is State.UNKNOWN


def test_a_bad_stored_country_addition_leaves_the_default_keywords_working(system: System,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Settings are checked when saved; one stored by hand that no longer compiles is left out."""
    org = new_org(system)
    with system.engine.begin() as conn:
        conn.execute(orm.orgs.update().where(orm.orgs.c.id == org).values(
            settings_json='{"keywords_by_country": {"MX": {"es": {"opt_out": ["sí"]}}}}'))
    result = sms(system, "ALTO", frm=MEXICAN)
    assert result.intent is Intent.OPT_OUT and "se ha dado de baja" in result.replies[0]
    assert "MX country keyword additions are invalid" in caplog.text
