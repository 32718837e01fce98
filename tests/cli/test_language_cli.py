"""The CLI's language commands: a contact's language, and an org's template override per language."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result

from conftest import Cli

FLOWS = Path(__file__).resolve().parents[2] / "flows"
PHONE = "+14155552671"


@pytest.fixture
def cli(cli_on: Callable[[Path], Cli]) -> Cli:
    invoke = cli_on(FLOWS)
    assert invoke("init").exit_code == 0
    return invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_contacts_language_is_set_shown_and_cleared(cli: Cli) -> None:
    ok(cli("contacts", "add", "--name", "Lupe", "--phone", PHONE, "--language", "es"))
    assert json.loads(ok(cli("contacts", "show", PHONE)))["language"] == "es"
    assert "language fr" in ok(cli("contacts", "set-language", PHONE, "FR"))
    assert json.loads(ok(cli("contacts", "show", PHONE)))["language"] == "fr"
    ok(cli("contacts", "set-language", PHONE, "none"))
    assert json.loads(ok(cli("contacts", "show", PHONE)))["language"] is None


def test_an_unknown_language_is_one_clear_line(cli: Cli) -> None:
    ok(cli("contacts", "add", "--phone", PHONE))
    result = cli("contacts", "set-language", PHONE, "klingon")
    assert result.exit_code != 0 and "language must be one of en, es, fr, pt" in result.output
    assert "Traceback" not in result.output


def test_a_template_override_is_saved_for_a_language(cli: Cli, tmp_path: Path) -> None:
    spanish = tmp_path / "help.es.j2"
    spanish.write_text("{{ program_name }}: llame al {{ help_contact }}. {{ stop_word }} para cancelar.",
                       encoding="utf-8")
    english = tmp_path / "help.j2"
    english.write_text("{{ program_name }}: call {{ help_contact }}.", encoding="utf-8")
    assert "template customer/help.es saved" in ok(cli("orgs", "set-template", "customer/help", str(spanish),
                                                       "--language", "es"))
    ok(cli("orgs", "set-template", "customer/help", str(english)))
    templates = json.loads(ok(cli("orgs", "show")))["settings"]["templates"]
    assert set(templates) == {"customer/help.es", "customer/help"}  # the second kept the first
    assert templates["customer/help.es"].startswith("{{ program_name }}: llame")


@pytest.mark.parametrize(("text", "language", "message"), [
    ("{{ telefono }}", "es", "unknown variable 'telefono'"),
    ("Hilfe", "de", "'de' is not one of en, es, fr, pt"),
])
def test_a_bad_override_is_refused_with_what_is_wrong(cli: Cli, tmp_path: Path, text: str, language: str,
                                                      message: str) -> None:
    source = tmp_path / "t.j2"
    source.write_text(text, encoding="utf-8")
    result = cli("orgs", "set-template", "customer/help", str(source), "--language", language)
    assert result.exit_code != 0 and message in result.output, result.output
    assert json.loads(ok(cli("orgs", "show")))["settings"]["templates"] == {}
