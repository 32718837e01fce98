"""A STOP through the running server when a packaged template is broken (OPTFLOW_TEMPLATE_DIR
pointing at a copy with a syntax error): the customer still gets a confirmation in the TwiML,
the opt-out is stored, and Twilio's retry of the same message gets the same confirmation."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.conftest import REPO, Library, Server, _start, _stop
from e2e.helpers import twiml_messages
from optflow.adapters.templates import TEMPLATE_DIR_ENV
from optflow.bootstrap import bootstrap
from optflow.config import Config
from optflow.domain import commands as c
from optflow.domain.model import State

pytestmark = pytest.mark.e2e

SYNTAX_ERROR = "{{ contact_name or 'Your contact' }} opted out{% if reason %} ({{ reason }})\n"  # no endif


def _serve_with_broken(tmp: Path, *broken: str) -> tuple[Server, Library]:
    templates = tmp / "templates"
    shutil.copytree(REPO / "message_templates", templates)
    for name in broken:
        (templates / f"{name}.j2").write_text(SYNTAX_ERROR, encoding="utf-8")
    server = _start(tmp, {TEMPLATE_DIR_ENV: str(templates)})
    return server, Library(bootstrap(Config(database_url=server.database_url, flows_dir=REPO / "flows"),
                                     create_schema=False))


@pytest.fixture(scope="module")
def broken_employee_note(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Library]]:
    server, library = _serve_with_broken(tmp_path_factory.mktemp("broken-note"), "employee/contact_opted_out")
    yield server, library
    library.system.close()
    _stop(server.process)


@pytest.fixture(scope="module")
def broken_confirmation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Library]]:
    server, library = _serve_with_broken(tmp_path_factory.mktemp("broken-confirmation"),
                                         "customer/opt_out_confirmation", "customer/opt_in_confirmation")
    yield server, library
    library.system.close()
    _stop(server.process)


def _twice(server: Server, library: Library, body: str = "STOP") -> tuple[str, list[str], list[str]]:
    """A contact's signed message and Twilio's retry of it (same MessageSid)."""
    number = library.new_number()
    library.handle(c.CreateContact(org_id=server.org_id, name="Jordan", phones=(number,)))
    sid = server.next_sid()
    first = twiml_messages(server.sms(number, body, sid=sid))
    retry = twiml_messages(server.sms(number, body, sid=sid))
    return number, first, retry


def test_a_broken_employee_note_does_not_touch_the_customers_stop(
        broken_employee_note: tuple[Server, Library]) -> None:
    server, library = broken_employee_note
    number, first, retry = _twice(server, library)
    # The packaged confirmation, unchanged by the broken note to the employee.
    assert first == ["E2E Motors alerts: you are unsubscribed and will get no more text messages from "
                     "E2E Motors. Reply START to resubscribe."]
    assert retry == first
    assert library.consent(server.org_id, number).state is State.OPTED_OUT
    [note] = library.messages(server.org_id, number, audience="employee")
    assert "Jordan" in note["body"] and "opted out" in note["body"]  # the built-in note
    assert _fallbacks(server, "employee/contact_opted_out", "error", "built_in") >= 1


def _fallbacks(server: Server, template: str, reason: str, fallback: str) -> float:
    """The server's `optflow_template_fallback_total` for one template, reason and fallback."""
    with server.client(None) as client:
        exposition = client.get("/metrics").text
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == "optflow_template_fallback_total" and sample.labels == {
                    "template": template, "reason": reason, "fallback": fallback}:
                return sample.value
    return 0.0


def test_a_broken_packaged_confirmation_sends_the_built_in_one(broken_confirmation: tuple[Server, Library]) -> None:
    server, library = broken_confirmation
    number, first, retry = _twice(server, library)
    assert len(first) == 1
    assert "E2E Motors alerts" in first[0] and "unsubscribed" in first[0] and "START" in first[0]
    assert retry == first
    assert library.consent(server.org_id, number).state is State.OPTED_OUT


def test_a_broken_packaged_opt_in_confirmation_sends_the_built_in_one(
        broken_confirmation: tuple[Server, Library]) -> None:
    server, library = broken_confirmation
    number, first, retry = _twice(server, library, "START")
    assert len(first) == 1
    assert "E2E Motors alerts" in first[0] and "subscribed" in first[0] and "STOP" in first[0]
    assert retry == first
    assert library.consent(server.org_id, number).state is State.OPTED_IN
