"""Requests to stop in plain words, in the languages US texting speaks, through the signed Twilio
webhook of the running server: what opts out, what does not, and what the ledger keeps as the reason."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from e2e.helpers import twiml_messages
from optflow.domain.model import State

if TYPE_CHECKING:
    from e2e.conftest import Library, Server

pytestmark = pytest.mark.e2e


def opted_in_number(server: Server, library: Library) -> str:
    """A number whose consent is opted in (after a STOP and a START), so a wrong opt-out would show."""
    number = library.new_number()
    twiml_messages(server.sms(number, "STOP"))
    twiml_messages(server.sms(number, "START"))
    assert library.consent(server.org_id, number).state is State.OPTED_IN
    assert "opt_in by keyword: 'start' (en)" in library.ledger(server.org_id, number)[-1]["evidence"]
    return number


@pytest.mark.parametrize(("body", "language", "rule"), [
    pytest.param("Ya no me manden textos, por favor", "es", "phrase:", id="spanish"),
    pytest.param("sáquenme de su lista de contactos", "es", "phrase:", id="spanish-list"),
    pytest.param("Por favor parem de me enviar mensagens", "pt", "phrase:", id="portuguese"),
    pytest.param("sotp", "en", "typo:stop", id="typo"),
])
def test_a_plain_language_opt_out_opts_out_and_the_ledger_says_why(
        server: Server, library: Library, body: str, language: str, rule: str) -> None:
    number = opted_in_number(server, library)
    replies = twiml_messages(server.sms(number, body))
    assert len(replies) == 1  # the one opt-out confirmation
    assert library.consent(server.org_id, number).state is State.OPTED_OUT
    entry = library.ledger(server.org_id, number)[-1]
    assert (entry["trigger"], entry["to_state"]) == ("opt_out", "opted_out")
    assert entry["evidence"].startswith(body)
    assert f"opt_out by {rule}" in entry["evidence"] and f"({language})" in entry["evidence"]
    [row] = [r for r in library.messages(server.org_id, number, direction="in") if r["body"] == body]
    assert row["intent"] == "opt_out"


@pytest.mark.parametrize("body", [
    pytest.param("no me manden más a técnico de ayer", id="about-a-person"),
    pytest.param("No me manden más al técnico de ayer, mándenme otro", id="about-a-person-2"),
    pytest.param("¿Cómo puedo parar el pago automático?", id="stopping-a-payment"),
])
def test_a_sentence_about_stopping_something_else_does_not_opt_out(
        server: Server, library: Library, body: str) -> None:
    number = opted_in_number(server, library)
    entries_before = len(library.ledger(server.org_id, number))
    server.sms(number, body)
    assert library.consent(server.org_id, number).state is State.OPTED_IN
    assert len(library.ledger(server.org_id, number)) == entries_before
    [row] = [r for r in library.messages(server.org_id, number, direction="in") if r["body"] == body]
    assert row["intent"] == "other"
