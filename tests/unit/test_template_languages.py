"""The packaged templates in Spanish, French and Portuguese, and how the renderer picks a language."""

from __future__ import annotations

import math
import re
import shutil
from pathlib import Path

import pytest

from optflow.adapters.templates import BUILT_IN_TEXTS, TemplateRenderer, TextSource, built_in_text
from optflow.domain.languages import CHANNEL_WORDS, YES_WORDS, localised_setting
from optflow.domain.model import Channel, InvalidInput
from optflow.domain.templates import CUSTOMER_TEMPLATE_NAMES, TEMPLATE_NAMES
from unit.test_templates import GSM7_BASIC, LONG, MARKETING_WORDS, REPO_TEMPLATES, TYPICAL, variables

TRANSLATED = ("es", "fr", "pt")

# What carriers look for, in each language's words.
RATES = {"es": "Pueden aplicarse tarifas de mensajes y datos", "fr": "Des frais de messages et de données peuvent",
         "pt": "Podem ser cobradas tarifas de mensagens e dados"}
OPTED_OUT = {"es": "no recibirá más mensajes", "fr": "ne recevrez plus de messages",
             "pt": "não receberá mais mensagens"}
# Promotional words in each language (the opt-out confirmation must sell nothing).
MARKETING = {"es": r"oferta|descuento|promoci|gratis|compre|rebaja", "fr": r"offre|promo|remise|gratuit|soldes",
             "pt": r"oferta|desconto|promo|grátis|compre"}


def in_language(name: str, language: str, values: dict[str, object] = TYPICAL, **changes: object) -> dict[str, object]:
    """The variables a caller passes for a text in `language` (optflow's own words translated)."""
    localised: dict[str, object] = {
        "channel": CHANNEL_WORDS[language][Channel.TEXT], "yes_word": YES_WORDS[language],
        "message_frequency": localised_setting(language, str(values["message_frequency"])),
        "help_contact": localised_setting(language, str(values["help_contact"])),
    }
    return variables(name, values, **{**localised, **changes})


def segments(text: str) -> int:
    """SMS segments: GSM-7 when every character is in its basic set (160, or 153 per part), else
    UCS-2 (70, or 67 per part)."""
    single, part = (160, 153) if set(text) <= GSM7_BASIC else (70, 67)
    return 1 if len(text) <= single else math.ceil(len(text) / part)


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(REPO_TEMPLATES)


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("name", CUSTOMER_TEMPLATE_NAMES)
def test_every_customer_template_renders_in_every_language(renderer: TemplateRenderer, name: str,
                                                           language: str) -> None:
    result = renderer.render(name, in_language(name, language), language=language)
    assert (result.source, result.language, result.error) == (TextSource.PACKAGED, language, None)
    assert result.text != renderer.render(name, in_language(name, language)).text  # not the English file
    assert "{" not in result.text and "  " not in result.text


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("name", CUSTOMER_TEMPLATE_NAMES)
def test_every_translation_passes_the_override_check(renderer: TemplateRenderer, name: str, language: str) -> None:
    source = (REPO_TEMPLATES / f"{name}.{language}.j2").read_text(encoding="utf-8")
    assert renderer.check_override(name, source) is None


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("name", [n for n in CUSTOMER_TEMPLATE_NAMES if n.startswith("customer/")])
def test_a_translated_sms_stays_within_three_segments_and_320_characters(
        renderer: TemplateRenderer, name: str, language: str) -> None:
    """Accents outside GSM-7 (á, ç, ã) make an SMS UCS-2: three segments is the budget then."""
    typical = renderer.render(name, in_language(name, language), language=language).text
    assert segments(typical) <= 3, (len(typical), typical)
    long = renderer.render(name, in_language(name, language, LONG, channel="WhatsApp"), language=language).text
    assert len(long) <= 320, (len(long), long)


@pytest.mark.parametrize("language", TRANSLATED)
def test_the_opt_out_confirmation_confirms_says_how_to_return_and_sells_nothing(
        renderer: TemplateRenderer, language: str) -> None:
    name = "customer/opt_out_confirmation"
    text = renderer.render(name, in_language(name, language), language=language).text
    assert "Lakeside Auto Service" in text and OPTED_OUT[language] in text and re.search(r"\bSTART\b", text)
    assert not re.search(MARKETING[language], text, re.IGNORECASE) and not MARKETING_WORDS.search(text)


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("name", ["customer/help", "customer/opt_in_confirmation"])
def test_help_and_opt_in_confirmation_carry_what_carriers_check(renderer: TemplateRenderer, name: str,
                                                                language: str) -> None:
    text = renderer.render(name, in_language(name, language), language=language).text
    assert "Lakeside Auto Service" in text and RATES[language] in text
    assert localised_setting(language, "Msg frequency varies") in text
    assert re.search(r"\bSTOP\b", text) and re.search(r"\bHELP\b", text)
    if name == "customer/help":
        assert "Lakeside Auto Group" in text and "+1 555 010 0199" in text


@pytest.mark.parametrize("language", TRANSLATED)
def test_opt_in_requests_ask_for_the_languages_yes_word(renderer: TemplateRenderer, language: str) -> None:
    for name in ("customer/opt_in_request.employee_started", "customer/opt_in_request.customer_started",
                 "customer/reauth_request"):
        text = renderer.render(name, in_language(name, language), language=language).text
        assert re.search(rf"\b{YES_WORDS[language]}\b", text) and re.search(r"\bSTOP\b", text), text


def test_a_template_not_translated_is_rendered_in_english_without_a_fallback(renderer: TemplateRenderer) -> None:
    """Notes to the employee are written in English only: asked in Spanish, the English file."""
    name = "employee/contact_opted_out"
    result = renderer.render(name, variables(name), language="es")
    assert (result.source, result.language, result.used_fallback) == (TextSource.PACKAGED, "en", False)
    assert result.text.startswith("Jordan opted out")


def test_an_override_is_rendered_for_the_language_it_was_given_for(renderer: TemplateRenderer) -> None:
    name = "customer/help"
    result = renderer.render(name, in_language(name, "es"), override="Ayuda: {{ help_contact }}", language="es")
    assert (result.text, result.source, result.language) == ("Ayuda: +1 555 010 0199", TextSource.OVERRIDE, "es")


def test_a_broken_override_falls_back_to_the_packaged_text_in_the_same_language(renderer: TemplateRenderer) -> None:
    name = "customer/opt_out_confirmation"
    result = renderer.render(name, in_language(name, "pt"), override="{{ broken ", language="pt")
    assert (result.source, result.language) == (TextSource.PACKAGED, "pt") and result.used_fallback
    assert OPTED_OUT["pt"] in result.text


def test_a_broken_translation_falls_back_to_the_built_in_text_in_the_same_language(tmp_path: Path) -> None:
    shutil.copytree(REPO_TEMPLATES, tmp_path / "t")
    (tmp_path / "t/customer/opt_out_confirmation.es.j2").write_text("{% for %}")
    name = "customer/opt_out_confirmation"
    result = TemplateRenderer(tmp_path / "t").render(name, in_language(name, "es"), language="es")
    assert (result.source, result.language) == (TextSource.BUILT_IN, "es")
    assert result.text == ("Lakeside Auto Service: se ha dado de baja y no recibirá más mensajes. "
                           "Responda START para volver a suscribirse.")


@pytest.mark.parametrize("language", TRANSLATED)
@pytest.mark.parametrize("name", CUSTOMER_TEMPLATE_NAMES)
def test_every_customer_template_has_a_built_in_text_in_every_language(name: str, language: str) -> None:
    text, in_language_ = built_in_text(name, language, {})  # needs no variables at all
    assert in_language_ == language and text.strip() and "{" not in text
    assert text != built_in_text(name, "en", {})[0]
    full, _ = built_in_text(name, language, in_language(name, language))
    if name == "customer/opt_out_confirmation":
        assert OPTED_OUT[language].split()[-1] in full and re.search(r"\bSTART\b", full)
    if name in ("customer/help", "customer/opt_in_confirmation"):
        assert RATES[language] in full and re.search(r"\bSTOP\b", full)


def test_the_notes_to_the_employee_have_english_built_in_texts_only() -> None:
    assert built_in_text("employee/pin_sent", "fr", {}) == (BUILT_IN_TEXTS["employee/pin_sent"]({}), "en")


@pytest.mark.parametrize("language", ["de", "EN", "", "es-MX"])
def test_an_unknown_language_is_a_caller_bug(renderer: TemplateRenderer, language: str) -> None:
    with pytest.raises(InvalidInput, match="unknown language"):
        renderer.render("customer/help", variables("customer/help"), language=language)


def test_every_template_name_renders_in_every_language(renderer: TemplateRenderer) -> None:
    for name in TEMPLATE_NAMES:
        for language in TRANSLATED:
            assert renderer.render(name, in_language(name, language), language=language).used_fallback is False
