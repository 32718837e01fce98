"""Answers in the customer's language and keywords of one country, end to end: signed Twilio
webhooks to the running server, replies read from its TwiML, consents and ledger from its database."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest

from e2e.helpers import API, api_org, error_code, twiml_messages
from optflow.domain import commands as c
from optflow.domain.model import State

if TYPE_CHECKING:
    from e2e.conftest import Library, Server

pytestmark = pytest.mark.e2e

# Words of the packaged texts in each language (message_templates/customer/*.<language>.j2).
SPANISH_CONFIRMATION = "se ha dado de baja y no recibirá más mensajes por SMS"
PORTUGUESE_CONFIRMATION = "você não receberá mais mensagens por SMS"
FRENCH_CONFIRMATION = "vous ne recevrez plus de messages par SMS"
ENGLISH_CONFIRMATION = "you are unsubscribed and will get no more text messages"
SPANISH_HELP = "Pueden aplicarse tarifas de mensajes y datos"
FRENCH_HELP = "Des frais de messages et de données peuvent s'appliquer"
ENGLISH_HELP = "Msg & data rates may apply"

_mexican = itertools.count(1)


def mexican_number() -> str:
    """A valid, unused Mexico City number (+52 55 ...)."""
    return f"+5255{(31_000_000 + next(_mexican) * 13) % 100_000_000:08d}"


def opt_out_entries(library: Library, org_id: int, number: str) -> list[tuple[str, str]]:
    return [(e["trigger"], e["to_state"]) for e in library.ledger(org_id, number)]


def test_alto_gets_the_spanish_confirmation_and_opts_out(server: Server, library: Library) -> None:
    number = library.new_number()
    [reply] = twiml_messages(server.sms(number, "ALTO"))
    assert SPANISH_CONFIRMATION in reply and "E2E Motors alerts" in reply and "START" in reply
    assert library.consent(server.org_id, number).state is State.OPTED_OUT
    assert opt_out_entries(library, server.org_id, number) == [("opt_out", "opted_out")]


@pytest.mark.parametrize(("body", "expected"), [
    pytest.param("Por favor ya no me manden más mensajes", SPANISH_CONFIRMATION, id="spanish"),
    pytest.param("Arrêtez de m'écrire svp", FRENCH_CONFIRMATION, id="french"),
    pytest.param("Por favor parem de me enviar mensagens", PORTUGUESE_CONFIRMATION, id="portuguese"),
    pytest.param("tirem meu número da lista", PORTUGUESE_CONFIRMATION, id="portuguese-remove-my-number"),
])
def test_a_plain_language_opt_out_is_confirmed_in_its_language(server: Server, library: Library, body: str,
                                                                expected: str) -> None:
    number = library.new_number()
    [reply] = twiml_messages(server.sms(number, body))
    assert expected in reply
    assert library.consent(server.org_id, number).state is State.OPTED_OUT


def test_a_portuguese_opt_out_gets_the_portuguese_confirmation(server: Server, library: Library) -> None:
    number = library.new_number()
    [reply] = twiml_messages(server.sms(number, "SAIR"))
    assert PORTUGUESE_CONFIRMATION in reply and "START" in reply
    assert library.consent(server.org_id, number).state is State.OPTED_OUT


@pytest.mark.parametrize(("body", "expected", "not_expected"), [
    pytest.param("AYUDA", SPANISH_HELP, ENGLISH_HELP, id="ayuda"),
    pytest.param("AIDE", FRENCH_HELP, ENGLISH_HELP, id="aide"),
    pytest.param("HELP", ENGLISH_HELP, SPANISH_HELP, id="help"),
])
def test_help_is_answered_in_the_keywords_language(server: Server, library: Library, body: str, expected: str,
                                                    not_expected: str) -> None:
    number = library.new_number()
    [reply] = twiml_messages(server.sms(number, body))
    assert expected in reply and not_expected not in reply
    assert "E2E Motors alerts" in reply and "STOP" in reply
    assert library.consent(server.org_id, number).state is State.UNKNOWN  # help changes no consent


def test_a_contacts_language_is_learned_and_answers_a_plain_stop(server: Server, library: Library) -> None:
    """STOP is shown in every language's texts, so it says nothing about the language: the
    contact's, learned from their AYUDA, decides."""
    number = library.new_number()
    contact_id = library.handle(c.CreateContact(server.org_id, name="Lupe", phones=(number,))).contact_id
    twiml_messages(server.sms(number, "AYUDA"))
    with server.client("agent") as agent:
        assert agent.get(f"{API}/contacts/{contact_id}").json()["language"] == "es"
    [reply] = twiml_messages(server.sms(number, "STOP"))
    assert SPANISH_CONFIRMATION in reply
    assert library.consent(server.org_id, number).state is State.OPTED_OUT


def test_a_stop_from_someone_unknown_is_answered_in_the_orgs_default_language(
        server: Server, library: Library) -> None:
    number = library.new_number()
    [reply] = twiml_messages(server.sms(number, "STOP"))
    assert ENGLISH_CONFIRMATION in reply
    org = api_org(server, library, default_language="fr")
    [reply] = twiml_messages(org.sms(library.new_number(), "STOP"))
    assert FRENCH_CONFIRMATION in reply


def test_a_language_set_through_the_api_is_used_and_a_bad_one_is_refused(server: Server, library: Library) -> None:
    number = library.new_number()
    with server.client("agent") as agent:
        created = agent.post(f"{API}/contacts", json={"name": "Ana", "phones": [number], "language": "pt"})
        assert created.status_code == 201 and created.json()["language"] == "pt"
        contact_id = created.json()["id"]
        patched = agent.patch(f"{API}/contacts/{contact_id}", json={"language": "fr"})
        assert patched.status_code == 200 and patched.json()["language"] == "fr"
        refused = agent.patch(f"{API}/contacts/{contact_id}", json={"language": "de"})
        assert refused.status_code == 422
        assert agent.get(f"{API}/contacts/{contact_id}").json()["language"] == "fr"
    [reply] = twiml_messages(server.sms(number, "STOP"))
    assert FRENCH_CONFIRMATION in reply


def test_org_overrides_are_per_language(server: Server, library: Library) -> None:
    org = api_org(server, library)
    with org.client("admin") as admin:
        response = admin.patch(f"{API}/settings", json={"templates": {
            "customer/help": "Our own help, {{ program_name }}. Reply {{ stop_word }} to opt out.",
            "customer/help.es": "Nuestra ayuda, {{ program_name }}. Responda {{ stop_word }} para cancelar.",
        }})
        assert response.status_code == 200, response.text
        assert "customer/help.es" in response.json()["settings"]["templates"]
    [spanish] = twiml_messages(org.sms(library.new_number(), "AYUDA"))
    [english] = twiml_messages(org.sms(library.new_number(), "HELP"))
    [french] = twiml_messages(org.sms(library.new_number(), "AIDE"))
    assert spanish.startswith("Nuestra ayuda")
    assert english.startswith("Our own help")
    assert FRENCH_HELP in french  # no French override: the packaged French text, not the English override


@pytest.mark.parametrize(("templates", "code"), [
    pytest.param({"customer/help.de": "Hilfe"}, "unknown_template", id="unknown-language"),
    pytest.param({"customer/help.es": "{{ telefono }}"}, "invalid_template", id="broken-spanish-override"),
])
def test_a_bad_language_override_is_refused(server: Server, library: Library, templates: dict[str, str],
                                            code: str) -> None:
    org = api_org(server, library)
    with org.client("admin") as admin:
        response = admin.patch(f"{API}/settings", json={"templates": templates})
        assert response.status_code == 422 and error_code(response) == code
        assert admin.get(f"{API}/settings").json()["settings"]["templates"] == {}


def test_a_mexico_only_keyword_opts_out_a_mexican_number_and_not_a_us_one(server: Server, library: Library) -> None:
    org = api_org(server, library)
    with org.client("admin") as admin:
        response = admin.patch(f"{API}/settings", json={
            "keywords_by_country": {"MX": {"es": {"opt_out": ["MOTORSBAJA"]}}}})
        assert response.status_code == 200, response.text
    mexican, american = mexican_number(), library.new_number()

    [reply] = twiml_messages(org.sms(mexican, "MOTORSBAJA"))
    assert SPANISH_CONFIRMATION in reply
    assert library.consent(org.org.id, mexican).state is State.OPTED_OUT
    assert opt_out_entries(library, org.org.id, mexican) == [("opt_out", "opted_out")]

    twiml_messages(org.sms(american, "MOTORSBAJA"))
    assert library.consent(org.org.id, american).state is not State.OPTED_OUT
    assert opt_out_entries(library, org.org.id, american) == []
    [stored] = library.messages(org.org.id, american, direction="in")
    assert stored["intent"] == "other"


@pytest.mark.parametrize("country", ["XX", "Mexico"])
def test_keywords_for_an_unknown_country_are_refused(server: Server, library: Library, country: str) -> None:
    org = api_org(server, library)
    with org.client("admin") as admin:
        response = admin.patch(f"{API}/settings", json={"keywords_by_country": {country: {"es": {"opt_out": ["X"]}}}})
        assert response.status_code == 422, response.text
        assert admin.get(f"{API}/settings").json()["settings"]["keywords_by_country"] == {}
