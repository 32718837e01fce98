"""How the classifier understands requests beyond its keywords: the phrase grammar, negatives,
typo correction and farewells, and the rule every decision names (see docs/keywords.md)."""

from __future__ import annotations

import pytest

from optflow.domain.keywords import (
    DEFAULT_ENTRIES,
    NEGATIVE_ENTRIES,
    TYPO_KEYWORDS,
    Classification,
    KeywordTable,
    classify,
)
from optflow.domain.model import Intent
from optflow.domain.typo_guard import REAL_WORDS


@pytest.mark.parametrize(("message", "matched", "language", "rule"), [
    ("STOP", "stop", "en", "keyword"),
    ("alto por favor", "alto", "es", "keyword"),
    ("ya no me manden textos", "ya no me manden textos", "es", "phrase:"),
    ("Sáquenme de su lista de contactos", "saquenme de su lista", "es", "phrase:"),
    ("elimine mi número por favor", "elimine mi numero", "es", "phrase:"),
    ("no deseo recibir más mensajes", "no deseo recibir mas mensajes", "es", "phrase:"),
    ("por favor parem de me enviar mensagens", "parem de me enviar", "pt", "phrase:"),
    ("tirem meu número", "tirem meu numero", "pt", "phrase:"),
    ("não me mandem mais nada", "nao me mandem mais", "pt", "phrase:"),
    ("arrêtez de m'écrire", "arretez de mecrire", "fr", "phrase:"),
    ("count me out of these texts", "count me out", "en", "phrase:"),
    ("take my number off", "take my number off", "en", "phrase:"),
    ("never text this number again", "never text this number", "en", "phrase:"),
    ("Goodbye!", "goodbye", "en", "farewell"),
    ("Adiós", "adios", "es", "farewell"),
    ("sotp", "sotp", "en", "typo:stop"),
    ("unsubcribe", "unsubcribe", "en", "typo:unsubscribe"),
    ("Cancle please", "cancle", "en", "typo:cancel"),
    ("detner", "detner", "es", "typo:detener"),
])
def test_an_opt_out_names_its_words_language_and_rule(message: str, matched: str, language: str, rule: str) -> None:
    result = classify(message)
    assert (result.intent, result.matched, result.language) == (Intent.OPT_OUT, matched, language)
    assert result.rule is not None and result.rule.startswith(rule)
    assert result.explanation().startswith(f"opt_out by {rule}")
    assert f"{matched!r} ({language})" in result.explanation()


def test_a_phrase_rule_is_the_entry_as_written() -> None:
    result = classify("please stop texting me")
    written = {" ".join(entry.strip(".… ").split()) for entry in DEFAULT_ENTRIES["en"]["opt_out"]}
    assert result.rule is not None and result.rule.startswith("phrase:")
    assert result.rule.removeprefix("phrase:") in written  # without its "..." marks
    assert result.rule.removeprefix("phrase:").startswith("(stop|quit|cease) (texting")


def test_the_rule_is_an_explanation_not_part_of_the_decision() -> None:
    assert classify("STOP") == Classification(Intent.OPT_OUT, "stop", "en")
    assert classify("STOP").rule == "keyword"


@pytest.mark.parametrize(("message", "expected"), [
    ("y", Intent.OPT_IN), ("JOIN", Intent.OPT_IN), ("subscribe", Intent.OPT_IN), ("alta", Intent.OPT_IN),
    ("suscribirme", Intent.OPT_IN), ("s'abonner", Intent.OPT_IN), ("sim", Intent.OPT_IN), ("assinar", Intent.OPT_IN),
    ("ajuda", Intent.HELP), ("AIDE", Intent.HELP),
    ("TD", Intent.OPT_OUT), ("stp", Intent.OPT_OUT), ("SAIR", Intent.OPT_OUT), ("baja", Intent.OPT_OUT),
])
def test_provider_keywords_in_every_language(message: str, expected: Intent) -> None:
    assert classify(message).intent is expected


@pytest.mark.parametrize("message", [
    "no me manden más al técnico de ayer",
    "no me manden más a técnico de ayer",
    "can you stop by at 5?",
    "How do I stop my automatic payment?",
    "don't stop the deliveries",
    "Cancel my appointment for tomorrow",
    "¿Puedo parar el pago automático?",
    "Não me mandem mais aquele técnico",
    "Je voudrais annuler mon rendez-vous",
    "Count me in! We have got to STOP this terrible bill from passing!!",
])
def test_a_negative_sets_aside_words_about_something_else(message: str) -> None:
    result = classify(message)
    assert result.intent is Intent.OTHER
    assert result.rule is not None and result.rule.startswith("negative:")


@pytest.mark.parametrize("message", [
    "No me manden más al técnico de ayer y dejen de escribirme",
    "Please stop by tomorrow, and stop texting me",
    "Cancel my appointment and remove my number from your list",
])
def test_a_request_beside_a_negative_still_counts(message: str) -> None:
    assert classify(message).intent is Intent.OPT_OUT


@pytest.mark.parametrize("word", ["step", "shop", "stomp", "atop", "quite", "suit", "cancer", "held", "stool",
                                  "spot", "post", "top", "stock", "remote", "deleted", "parer", "aider"])
def test_a_real_word_near_a_keyword_is_not_taken_for_a_typo(word: str) -> None:
    assert classify(word).intent is Intent.OTHER
    assert classify(f"{word} please").intent is Intent.OTHER


def test_the_guard_lists_real_words_near_every_typo_keyword() -> None:
    # Made from word lists by scripts/typo_guard.py: it must cover the usual suspects.
    assert {"step", "shop", "cancer", "held", "parer"} <= REAL_WORDS
    assert not REAL_WORDS & {"stop", "cancel", "help"}
    assert len(TYPO_KEYWORDS) == len(set(TYPO_KEYWORDS))


@pytest.mark.parametrize("message", [
    "the stpo was closed",  # a word the table does not know beside the misspelling
    "stpo by tomorrow at 5",
    "sto",  # fewer than four letters
    "stahhhp is what i said about the noise",
])
def test_typos_are_corrected_only_in_short_messages_the_table_otherwise_knows(message: str) -> None:
    assert classify(message).intent is Intent.OTHER


def test_a_farewell_counts_alone_but_not_closing_a_conversation() -> None:
    assert classify("bye").intent is Intent.OPT_OUT
    assert classify("Bye bye!!").intent is Intent.OPT_OUT
    assert classify("ok thanks, bye").intent is Intent.OTHER
    assert classify("Thank you, see you Monday").intent is Intent.OTHER


def test_org_additions_keep_the_grammar_negatives_and_typos() -> None:
    table = KeywordTable.default().with_additions({"es": {"opt_out": ["pausa"]}})
    assert table.classify("pausa").rule == "keyword"
    assert table.classify("ya no me manden textos").intent is Intent.OPT_OUT
    assert table.classify("no me manden más al técnico de ayer").intent is Intent.OTHER
    assert table.classify("sotp").rule == "typo:stop"


def test_every_negative_entry_compiles_and_names_its_language() -> None:
    assert set(NEGATIVE_ENTRIES) == {"en", "es", "fr", "pt"}
    assert classify("stop by").language == "en"
    assert classify("no me manden más al técnico").language == "es"


@pytest.mark.parametrize(("message", "expected"), [
    ("This isn't Karen. Please stop.", Intent.OPT_OUT),
    ("Wrong number. Who is Maria?", Intent.OPT_OUT),
    ("No soy Juan. Ya no me escriban.", Intent.OPT_OUT),
    ("Não sou a Ana. Pare.", Intent.OPT_OUT),
    ("I can't make it tomorrow. Please cancel.", Intent.OTHER),  # cancel ends appointments too
    ("Got it, thanks. Bye!", Intent.OTHER),  # a farewell closing a chat
    ("I will check my calendar. Yes.", Intent.OTHER),  # consent is never read sentence by sentence
])
def test_a_sentence_that_is_a_request_to_stop_counts_in_a_longer_message(message: str, expected: Intent) -> None:
    assert classify(message).intent is expected
