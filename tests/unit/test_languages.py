"""Which language a reply is in, how the customer's language is read from their words, which org
override a text in a language uses, and the keywords of one country."""

from __future__ import annotations

from typing import get_args

import pytest

from optflow.domain.addresses import country_of
from optflow.domain.keywords import classify
from optflow.domain.languages import (
    CHANNEL_WORDS,
    SUPPORTED_LANGUAGES,
    YES_WORDS,
    detect_language,
    localised_setting,
    reply_language,
    spoken_language,
    supported_language,
)
from optflow.domain.model import Channel, Intent
from optflow.domain.settings import OrgSettings, resolve
from optflow.domain.templates import override_for, override_key, parse_override_key

# --- the language of a reply -----------------------------------------------------------------


@pytest.mark.parametrize(("spoken", "contact", "org", "expected"), [
    ("es", "fr", "pt", "es"),  # what the customer just used wins
    (None, "fr", "pt", "fr"),  # else the contact's language
    (None, None, "pt", "pt"),  # else the org's default
    (None, None, None, "en"),
    (None, "de", "es", "es"),  # a language optflow does not write is skipped
])
def test_reply_language_order(spoken: str | None, contact: str | None, org: str | None, expected: str) -> None:
    assert reply_language(spoken, contact, org) == expected


@pytest.mark.parametrize(("text", "language"), [
    ("ALTO", "es"), ("AYUDA", "es"), ("AIDE", "fr"), ("ARRÊT", "fr"), ("SAIR", "pt"), ("AJUDA", "pt"),
    ("SIM", "pt"), ("OUI", "fr"),
])
def test_a_keywords_own_language_is_the_language_spoken(text: str, language: str) -> None:
    result = classify(text)
    assert result.intent is not Intent.OTHER
    assert spoken_language(result.language, result.matched, text) == language


@pytest.mark.parametrize("text", ["STOP", "stop", "START", "HELP", "Stop!"])
def test_the_keywords_every_language_shows_say_nothing_about_the_language(text: str) -> None:
    """Spanish texts say "Responda STOP" too: a STOP is no reason to answer in English."""
    result = classify(text)
    assert result.language == "en"  # the table files them under English...
    assert spoken_language(result.language, result.matched, text) is None  # ...but they tell nothing
    # Whatever a classifier reports as the match, the message STOP alone tells nothing either.
    assert spoken_language("en", "rule opt_out: stop", text) is None


def test_a_request_in_english_words_is_english() -> None:
    result = classify("please stop texting me")
    assert spoken_language(result.language, result.matched, "please stop texting me") == "en"


@pytest.mark.parametrize(("text", "language"), [
    ("gracias", "es"),
    ("¿A qué hora abren mañana? Gracias", "es"),
    ("hola, necesito cambiar mi cita por favor", "es"),
    ("merci beaucoup, à demain", "fr"),
    ("je voudrais changer mon rendez-vous", "fr"),
    ("obrigado, até amanhã", "pt"),
    ("você pode me ligar depois? estou no trabalho", "pt"),
    ("thanks, see you tomorrow", "en"),
    ("can you call me when the car is ready", "en"),
])
def test_the_words_of_a_message_tell_its_language(text: str, language: str) -> None:
    assert detect_language(text) == language


@pytest.mark.parametrize("text", ["ok", "👍", "5pm", "Jordan", "", "si ok", "no"])
def test_a_message_that_does_not_tell_leaves_the_language_unknown(text: str) -> None:
    assert detect_language(text) is None


def test_supported_language_reads_codes_and_tags() -> None:
    assert supported_language("ES") == "es" and supported_language("pt-BR") == "pt"
    assert supported_language("pt_PT") == "pt" and supported_language("de") is None
    assert supported_language(None) is None and supported_language("") is None


def test_every_language_names_every_channel_and_has_an_opt_in_word_the_classifier_knows() -> None:
    assert set(CHANNEL_WORDS) == set(SUPPORTED_LANGUAGES) == set(YES_WORDS)
    for language in SUPPORTED_LANGUAGES:
        assert set(CHANNEL_WORDS[language]) == set(Channel)
        assert classify(YES_WORDS[language]).intent is Intent.OPT_IN, language
    assert all(CHANNEL_WORDS["en"][channel] == channel.value for channel in Channel)


def test_only_the_default_values_of_text_settings_are_translated() -> None:
    assert localised_setting("es", "Msg frequency varies") == "La frecuencia de los mensajes varía"
    assert localised_setting("es", "Up to 4 msgs per month") == "Up to 4 msgs per month"  # the org's own
    assert localised_setting("en", "Msg frequency varies") == "Msg frequency varies"
    defaults = OrgSettings()
    assert localised_setting("fr", defaults.message_frequency) != defaults.message_frequency
    assert localised_setting("pt", defaults.help_contact) == "responda HELP"


def test_the_default_language_setting_offers_exactly_the_supported_languages() -> None:
    annotation = OrgSettings.model_fields["default_language"].annotation
    assert set(get_args(annotation)) == set(SUPPORTED_LANGUAGES)
    assert OrgSettings().default_language == "en"


# --- org overrides per language --------------------------------------------------------------

HELP = "customer/help"


def test_override_keys_name_a_template_and_maybe_a_language() -> None:
    assert parse_override_key("customer/help.es") == (HELP, "es")
    assert parse_override_key(HELP) == (HELP, None)
    assert parse_override_key("customer/opt_in_request.customer_started") == (
        "customer/opt_in_request.customer_started", None)
    assert parse_override_key("customer/opt_in_request.customer_started.pt") == (
        "customer/opt_in_request.customer_started", "pt")
    assert parse_override_key("customer/help.de") == ("customer/help.de", None)  # refused later: unknown name
    assert override_key(HELP, "fr") == "customer/help.fr" and override_key(HELP, None) == HELP


def test_the_override_for_the_replys_language_is_used() -> None:
    templates = {HELP: "plain", "customer/help.es": "spanish", "customer/help.fr": "french"}
    assert override_for(templates, HELP, "es", "en") == "spanish"
    assert override_for(templates, HELP, "fr", "en") == "french"
    assert override_for(templates, HELP, "en", "en") == "plain"


def test_an_unsuffixed_override_is_in_the_orgs_default_language() -> None:
    templates = {HELP: "texto propio"}
    assert override_for(templates, HELP, "es", "es") == "texto propio"
    assert override_for(templates, HELP, "en", "es") is None  # an English reply uses the packaged English text


def test_an_override_in_another_language_is_not_used() -> None:
    """An org that rewrote its English HELP still answers AYUDA with the Spanish packaged text,
    not its English one."""
    assert override_for({HELP: "english"}, HELP, "es", "en") is None
    assert override_for({"customer/help.fr": "french"}, HELP, "es", "en") is None


def test_a_suffixed_override_for_the_default_language_beats_the_plain_one() -> None:
    assert override_for({HELP: "plain", "customer/help.en": "suffixed"}, HELP, "en", "en") == "suffixed"


# --- keywords per country --------------------------------------------------------------------


def test_the_country_of_a_number_is_its_numbering_plans() -> None:
    assert country_of("+525512345678") == "MX"
    assert country_of("+14155552671") == "US"
    assert country_of("+14165550123") == "CA"
    assert country_of("sam@example.com") is None and country_of("chat-user-7") is None


def test_keywords_by_country_take_country_codes_in_any_case() -> None:
    settings = resolve([{"keywords_by_country": {"mx": {"es": {"opt_out": ["BAJA"]}}}}])
    assert settings.keywords_by_country == {"MX": {"es": {"opt_out": ["BAJA"]}}}


@pytest.mark.parametrize("code", ["XX", "MEX", "Mexico", ""])
def test_an_unknown_country_is_refused(code: str) -> None:
    with pytest.raises(ValueError, match="not a country code"):
        resolve([{"keywords_by_country": {code: {"es": {"opt_out": ["BAJA"]}}}}])


def test_keywords_by_country_merge_country_by_country_from_the_parent() -> None:
    parent = {"keywords_by_country": {"MX": {"es": {"opt_out": ["BAJA"]}}}}
    child = {"keywords_by_country": {"BR": {"pt": {"opt_out": ["SAIA"]}}}}
    assert set(resolve([parent, child]).keywords_by_country) == {"MX", "BR"}


def test_a_country_given_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="MX is given twice"):
        resolve([{"keywords_by_country": {"mx": {"es": {"opt_out": ["BAJA"]}}, "MX": {"es": {"opt_out": ["X"]}}}}])


@pytest.mark.parametrize(("language", "shown"), [
    ("en", "call or text +12025550123"), ("es", "llame o escriba al +12025550123"),
    ("fr", "appelez ou écrivez au +12025550123"), ("pt", "ligue ou envie mensagem para +12025550123"),
])
def test_a_new_orgs_help_contact_is_shown_in_the_customers_language(language: str, shown: str) -> None:
    assert localised_setting(language, "call or text +12025550123") == shown
    assert localised_setting(language, "call or text our office") == "call or text our office"  # an org's own words
