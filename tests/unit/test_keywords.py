"""The inbound intent classifier: the labelled messages, what a match reports, and org additions.

The labelled messages live in data/labelled_messages.tsv (one test per row, named after the row),
so adding a case is one line of data.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from optflow.domain.keywords import (
    MAX_WORDS,
    Classification,
    KeywordTable,
    classify,
)
from optflow.domain.model import Intent, InvalidInput

DATA = Path(__file__).parent / "data" / "labelled_messages.tsv"
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\U([0-9a-fA-F]{8})")


def _labelled_rows() -> list[tuple[int, str, Intent, str]]:
    rows = []
    for number, line in enumerate(DATA.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        message, intent, note = line.split("\t")
        message = _ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), message)
        rows.append((number, message, Intent(intent), note))
    return rows


ROWS = _labelled_rows()


@pytest.mark.parametrize(
    ("message", "expected", "note"),
    [
        pytest.param(message, intent, note, id=f"line{number}:{message}")
        for number, message, intent, note in ROWS
    ],
)
def test_labelled_message(message: str, expected: Intent, note: str) -> None:
    result = classify(message)
    assert result.intent == expected, f"{message!r} ({note}) -> {result}"


# The keywords the issue names; the labelled table must carry each of them as a row of its own.
REQUIRED = {
    Intent.OPT_OUT: [
        "stop", "quit", "end", "revoke", "opt out", "cancel", "unsubscribe",  # the FCC's seven
        "stopall", "stop all", "optout", "opt-out", "remove",  # the carriers'
        "delete", "go away", "leave", "cease", "block", "halt", "f*** off", "f*** you",
        "🛑", "🚫", "❌", "⛔", "🔕", "📴", "🖕",  # the debt-collection product's
        "alto", "para", "parar", "cancelar", "basta", "no más", "no mas", "arret", "arrêt", "arrête",
    ],
    Intent.OPT_IN: ["yes", "start", "unstop", "si", "sí", "oui"],
    Intent.HELP: ["help", "info", "ayuda", "aide"],
}


def test_the_labelled_table_covers_every_required_keyword() -> None:
    labelled = {(message, intent) for _, message, intent, _ in ROWS}
    required = [(word, intent) for intent, words in REQUIRED.items() for word in words]
    missing = [pair for pair in required if pair not in labelled]
    assert not missing
    assert len(ROWS) >= 200
    assert {intent for _, _, intent, _ in ROWS} == set(Intent)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("STOP", Classification(Intent.OPT_OUT, "stop", "en")),
        ("STOPPPP", Classification(Intent.OPT_OUT, "stop", "en")),
        ("stop stop stop", Classification(Intent.OPT_OUT, "stop", "en")),
        ("opt-out", Classification(Intent.OPT_OUT, "opt out", "en")),
        ("arrête", Classification(Intent.OPT_OUT, "arrete", "fr")),
        ("No más", Classification(Intent.OPT_OUT, "no mas", "es")),
        ("🛑🛑", Classification(Intent.OPT_OUT, "🛑", None)),
        ("⛔\ufe0f", Classification(Intent.OPT_OUT, "⛔", None)),
        ("🖕🏽", Classification(Intent.OPT_OUT, "🖕", None)),
        ("f**k off", Classification(Intent.OPT_OUT, "fk off", "en")),
        ("please stop texting me", Classification(Intent.OPT_OUT, "stop texting me", "en")),
        ("STOP TEXTING ME!!!", Classification(Intent.OPT_OUT, "stop texting me", "en")),
        ("stop texting me I already paid", Classification(Intent.OPT_OUT, "stop texting me", "en")),
        (
            "take me off of your mailing list",
            Classification(Intent.OPT_OUT, "take me off of your mailing list", "en"),
        ),
        ("no me escriban más", Classification(Intent.OPT_OUT, "no me escriban mas", "es")),
        ("Ne m’envoyez plus de SMS", Classification(Intent.OPT_OUT, "ne menvoyez plus", "fr")),
        ("yes stop", Classification(Intent.OPT_OUT, "stop", "en")),
        ("STOPPPP please", Classification(Intent.OPT_OUT, "stop", "en")),  # the keyword, not the spelling
        ("arrêtez svp", Classification(Intent.OPT_OUT, "arretez", "fr")),
        ("stop 😡 texting me", Classification(Intent.OPT_OUT, "stop texting me", "en")),
        ("Sí", Classification(Intent.OPT_IN, "si", "es")),
        ("yes please", Classification(Intent.OPT_IN, "yes", "en")),
        ("AIDE", Classification(Intent.HELP, "aide", "fr")),
        ("ok thanks", Classification(Intent.OTHER, None, None)),
        ("can you stop by at 5?", Classification(Intent.OTHER, "stop by", "en")),  # a negative
        ("", Classification(Intent.OTHER, None, None)),
        ("   ", Classification(Intent.OTHER, None, None)),
    ],
)
def test_a_match_reports_the_normalised_keyword_or_phrase_and_its_language(
    message: str, expected: Classification
) -> None:
    assert classify(message) == expected


def test_whole_message_matching_stops_at_the_word_limit() -> None:
    courtesy = ["please", "now", "just", "seriously", "sorry", "thanks", "ok", "hi", "hello", "hey"]
    courtesy += ["dear", "sir"]
    assert len(courtesy) >= MAX_WORDS
    at_limit = " ".join([*courtesy[: MAX_WORDS - 1], "stop"])
    over_limit = " ".join([*courtesy[:MAX_WORDS], "stop"])
    assert classify(at_limit).intent == Intent.OPT_OUT
    assert classify(over_limit).intent == Intent.OTHER
    assert classify(over_limit + " texting me").intent == Intent.OPT_OUT  # an explicit phrase still counts


def test_the_default_table_is_built_once_and_shared() -> None:
    assert KeywordTable.default() is KeywordTable.default()


def test_classify_uses_the_table_it_is_given() -> None:
    table = KeywordTable.default().with_additions({"es": {"opt_out": ["pausa"]}})
    assert classify("pausa").intent == Intent.OTHER
    assert classify("pausa", table) == Classification(Intent.OPT_OUT, "pausa", "es")
    assert classify("pausa", table) == table.classify("pausa")


# --------------------------------------------------------------------------------------------
# An org's additions
# --------------------------------------------------------------------------------------------

ORG_ADDITIONS = {
    "es": {"opt_out": ["pausa"], "opt_in": ["vale"]},
    "en": {
        "opt_out": ["not interested", "... (too many|so many) (texts|messages) ..."],
        "help": ["assistance"],
    },
    "*": {"opt_out": ["👎"]},
}


@pytest.fixture(scope="module")
def org_table() -> KeywordTable:
    return KeywordTable.default().with_additions(ORG_ADDITIONS)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("pausa", Classification(Intent.OPT_OUT, "pausa", "es")),
        ("PAUSA!", Classification(Intent.OPT_OUT, "pausa", "es")),
        ("pausa por favor", Classification(Intent.OPT_OUT, "pausa", "es")),
        ("vale", Classification(Intent.OPT_IN, "vale", "es")),
        ("Vale, gracias", Classification(Intent.OPT_IN, "vale", "es")),
        ("not interested", Classification(Intent.OPT_OUT, "not interested", "en")),
        ("Not interested, thanks", Classification(Intent.OPT_OUT, "not interested", "en")),
        (
            "Hello, I paid everything last week and I get too many messages from your company",
            Classification(Intent.OPT_OUT, "too many messages", "en"),
        ),
        ("assistance", Classification(Intent.HELP, "assistance", "en")),
        ("asssistance", Classification(Intent.HELP, "assistance", "en")),  # runs collapse on both sides
        ("👎👎", Classification(Intent.OPT_OUT, "👎", None)),
        ("STOP", Classification(Intent.OPT_OUT, "stop", "en")),  # the defaults still apply
        ("vale stop", Classification(Intent.OPT_OUT, "stop", "en")),  # and opt-out still wins
    ],
)
def test_an_org_adds_words_phrases_and_emoji(
    org_table: KeywordTable, message: str, expected: Classification
) -> None:
    assert org_table.classify(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        "pausa",
        "vale",
        "not interested",
        "Hello, I paid everything last week and I get too many messages from your company",
        "assistance",
        "👎",
        "the pausa button was great",  # an added whole-message word inside a sentence
    ],
)
def test_additions_do_not_leak_into_the_default_table(org_table: KeywordTable, message: str) -> None:
    assert org_table is not KeywordTable.default()
    assert classify(message).intent == Intent.OTHER
    if message == "the pausa button was great":
        assert org_table.classify(message).intent == Intent.OTHER


def test_additions_leave_the_extended_table_unchanged() -> None:
    base = KeywordTable.default().with_additions({"es": {"opt_out": ["pausa"]}})
    before = base.as_dict()
    extended = base.with_additions({"es": {"opt_out": ["silencio"]}})
    assert base.as_dict() == before
    assert base.classify("silencio").intent == Intent.OTHER
    assert extended.classify("silencio").intent == Intent.OPT_OUT
    assert extended.classify("pausa").intent == Intent.OPT_OUT


def test_as_dict_shows_entries_as_written_with_the_additions(org_table: KeywordTable) -> None:
    default = KeywordTable.default().as_dict()
    shown = org_table.as_dict()
    fcc_seven = {"stop", "quit", "end", "revoke", "opt out", "cancel", "unsubscribe"}
    assert fcc_seven <= set(default["en"]["opt_out"])
    assert "no más" in default["es"]["opt_out"]
    assert "🛑" in default["*"]["opt_out"]
    assert "pausa" not in default["es"]["opt_out"]
    assert shown["es"]["opt_out"] == [*default["es"]["opt_out"], "pausa"]
    assert shown["es"]["opt_in"] == [*default["es"]["opt_in"], "vale"]
    assert shown["en"]["opt_out"][-1] == "... (too many|so many) (texts|messages) ..."
    assert shown["*"]["opt_out"][-1] == "👎"


def test_as_dict_returns_a_copy() -> None:
    table = KeywordTable.default()
    table.as_dict()["en"]["opt_out"].append("banana")
    assert "banana" not in table.as_dict()["en"]["opt_out"]
    assert table.classify("banana").intent == Intent.OTHER


def test_adding_a_known_entry_again_changes_nothing() -> None:
    table = KeywordTable.default().with_additions({"EN": {"opt_out": ["stop", "halt"]}})
    assert table.as_dict() == KeywordTable.default().as_dict()


@pytest.mark.parametrize(
    ("additions", "named"),
    [
        ({"es": {"opt_out": [""]}}, ["es/opt_out", "empty"]),
        ({"es": {"opt_out": ["pausa", "   "]}}, ["es/opt_out", "empty"]),
        ({"es": {"optout": ["pausa"]}}, ["es", "'optout'", "opt_out, opt_in or help"]),
        ({"es": {"other": ["pausa"]}}, ["es", "'other'"]),
        ({"english": {"opt_out": ["halt"]}}, ["'english'", "language code"]),
        ({"": {"opt_out": ["halt"]}}, ["''", "language code"]),
        ({"es": {"opt_out": "pausa"}}, ["es/opt_out", "list"]),
        ({"es": {"opt_out": ["pausa", 7]}}, ["es/opt_out", "7"]),
        ({"es": ["pausa"]}, ["es", "intent"]),
        ({"fr": {"opt_out": ["(arrêtez|cessez de m'écrire"]}}, ["fr/opt_out", "(arrêtez", "missing ')'"]),
        ({"fr": {"opt_out": ["arrêtez]"]}}, ["fr/opt_out", "unexpected ']'"]),
        ({"en": {"opt_out": ["(stop|) now"]}}, ["en/opt_out", "empty alternative"]),
        ({"en": {"opt_out": ["!!!"]}}, ["en/opt_out", "'!!!'", "at least one word"]),
        ({"en": {"opt_out": ["[please]"]}}, ["en/opt_out", "'[please]'", "at least one word"]),
        ({"en": {"opt_out": ["... stop it"]}}, ["en/opt_out", "'... stop it'", "both sides"]),
        ({"en": {"opt_out": ["..."]}}, ["en/opt_out", "both sides"]),
        ({"es": {"opt_in": ["stop"]}}, ["es/opt_in", "'stop'", "opt_out"]),
        ({"en": {"help": ["STOPPP"]}}, ["en/help", "'stoppp'", "opt_out"]),
    ],
)
def test_bad_additions_raise_invalid_input_naming_the_problem(additions: object, named: list[str]) -> None:
    with pytest.raises(InvalidInput) as raised:
        KeywordTable.default().with_additions(additions)  # type: ignore[arg-type]
    for part in named:
        assert part in str(raised.value)
    assert raised.value.code == "invalid_input"


def test_a_failed_addition_leaves_the_default_table_as_it_was() -> None:
    before = KeywordTable.default().as_dict()
    with pytest.raises(InvalidInput):
        KeywordTable.default().with_additions({"es": {"opt_out": ["pausa", ""]}})
    assert KeywordTable.default().as_dict() == before
    assert classify("pausa").intent == Intent.OTHER
