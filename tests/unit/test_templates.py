"""Message templates: the packaged defaults, org overrides, the sandbox and the fallback rule."""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

import pytest
from jinja2 import Template
from prometheus_client import CollectorRegistry

from optflow.adapters.template_limits import TemplateLimits
from optflow.adapters.templates import (
    BUILT_IN_TEXTS,
    COMMON_VARIABLES,
    TEMPLATE_DIR_ENV,
    TEMPLATE_NAMES,
    TEMPLATE_VARIABLES,
    TemplateRenderer,
    TextSource,
    default_template_dir,
    template_fallback_counter,
)
from optflow.domain.model import InvalidInput
from optflow.domain.templates import CUSTOMER_TEMPLATE_NAMES, packaged_file_name

REPO_TEMPLATES = Path(__file__).resolve().parents[2] / "message_templates"

TYPICAL = {
    "org_name": "Lakeside Auto Group",
    "program_name": "Lakeside Auto Service",
    "employee_name": "Dana Whitfield",
    "contact_name": "Jordan",
    "channel": "text",
    "help_contact": "+1 555 010 0199",
    "message_frequency": "Msg frequency varies",
    "stop_word": "STOP",
    "start_word": "START",
    "help_word": "HELP",
    "yes_word": "YES",
    "pin": "482913",
    "pin_valid_minutes": 10,
    "held_message": "Can you come by at 3?",
    "unsubscribe_url": "https://lakeside-auto.example/unsubscribe/8f3a2c",
    "reason": "replied STOP",
}

# Longer than most real values, to check the hard 320-character ceiling.
LONG = {
    **TYPICAL,
    "org_name": "Northern Lakeside Automotive Group of Minnesota",
    "program_name": "Northern Lakeside Automotive Service Reminders",
    "employee_name": "Alexandra Montgomery-Whitfield",
    "contact_name": "Christopher-Jonathan",
    "channel": "WhatsApp",
    "help_contact": "https://northern-lakeside-automotive.example.com/help/contact",
    "message_frequency": "Up to 4 msgs per month",
}

CUSTOMER_NAMES = [name for name in TEMPLATE_NAMES if name.startswith("customer/")]

# GSM 03.38 basic character set: anything else switches an SMS to UCS-2 and 70-character segments.
GSM7_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)

MARKETING_WORDS = re.compile(r"\b(sale|offer|discount|deal|promo\w*|coupon|free|save|buy)\b|%", re.IGNORECASE)


def variables(name: str, values: Mapping[str, object] = TYPICAL, **changes: object) -> dict[str, object]:
    """Exactly the documented variables of `name`, as a caller is expected to pass them."""
    merged = {**values, **changes}
    return {key: merged[key] for key in TEMPLATE_VARIABLES[name]}


class CountingRenderer(TemplateRenderer):
    """Counts compilations, to prove templates are compiled once and not on every render."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.compiled: list[str] = []

    def _compile(self, source: str, name: str) -> Template:
        self.compiled.append(name)
        return super()._compile(source, name)


@pytest.fixture(scope="module")
def renderer() -> TemplateRenderer:
    return TemplateRenderer(REPO_TEMPLATES)


@pytest.fixture
def template_copy(tmp_path: Path) -> Path:
    """A writable copy of the packaged templates, to break one of them."""
    target = tmp_path / "message_templates"
    shutil.copytree(REPO_TEMPLATES, target)
    return target


# --- the packaged defaults -------------------------------------------------------------------


def test_template_files_are_exactly_the_known_names() -> None:
    """Every template in English; the customer's ones in every other supported language too."""
    files = {str(p.relative_to(REPO_TEMPLATES)) for p in REPO_TEMPLATES.rglob("*.j2")}
    assert files == {packaged_file_name(name, "en") for name in TEMPLATE_NAMES} | {
        packaged_file_name(name, language) for name in CUSTOMER_TEMPLATE_NAMES for language in ("es", "fr", "pt")
    }
    assert not [p for p in REPO_TEMPLATES.rglob("*") if p.is_file() and p.suffix != ".j2"]


def test_every_template_has_the_common_variables() -> None:
    assert set(TEMPLATE_VARIABLES) == set(TEMPLATE_NAMES)
    assert all(allowed >= COMMON_VARIABLES for allowed in TEMPLATE_VARIABLES.values())
    assert TEMPLATE_VARIABLES["customer/pin"] - COMMON_VARIABLES == {"pin", "pin_valid_minutes"}
    assert TEMPLATE_VARIABLES["customer/help"] == COMMON_VARIABLES


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_default_renders_with_its_documented_variables(renderer: TemplateRenderer, name: str) -> None:
    result = renderer.render(name, variables(name))
    assert result.name == name
    assert result.used_fallback is False and result.error is None
    assert result.text and result.text == result.text.strip()
    assert "{" not in result.text and "}" not in result.text


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_default_passes_the_override_check(renderer: TemplateRenderer, name: str) -> None:
    """The check orgs' templates go through also holds for ours: no variable outside the list."""
    assert renderer.check_override(name, (REPO_TEMPLATES / f"{name}.j2").read_text()) is None


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_default_renders_with_optional_variables_empty(renderer: TemplateRenderer, name: str) -> None:
    empties: dict[str, object] = {
        k: "" for k in ("contact_name", "held_message", "reason") if k in TEMPLATE_VARIABLES[name]
    }
    text = renderer.render(name, variables(name) | empties).text
    assert "  " not in text and " ," not in text and "()" not in text and ": ." not in text


def test_opt_in_confirmation_has_what_carriers_check(renderer: TemplateRenderer) -> None:
    text = renderer.render("customer/opt_in_confirmation", variables("customer/opt_in_confirmation")).text
    for required in ("Lakeside Auto Service", "Msg frequency varies", "Msg & data rates may apply"):
        assert required in text
    assert re.search(r"\bHELP\b", text) and re.search(r"\bSTOP\b", text)


def test_opt_out_confirmation_confirms_says_how_to_return_and_sells_nothing(
    renderer: TemplateRenderer,
) -> None:
    text = renderer.render("customer/opt_out_confirmation", variables("customer/opt_out_confirmation")).text
    assert "Lakeside Auto Service" in text
    assert "no more text messages" in text
    assert re.search(r"\bSTART\b", text)
    assert not MARKETING_WORDS.search(text), text


def test_marketing_word_filter_would_catch_marketing() -> None:
    assert MARKETING_WORDS.search("Reply START for 20% off")
    assert MARKETING_WORDS.search("Our summer SALE is on")


def test_help_names_the_business_and_how_to_reach_it(renderer: TemplateRenderer) -> None:
    text = renderer.render("customer/help", variables("customer/help")).text
    for required in ("Lakeside Auto Service", "Lakeside Auto Group", "+1 555 010 0199", "rates may apply"):
        assert required in text
    assert re.search(r"\bSTOP\b", text) and re.search(r"\bHELP\b", text)


def test_help_does_not_repeat_a_program_named_like_the_org(renderer: TemplateRenderer) -> None:
    text = renderer.render(
        "customer/help", variables("customer/help", program_name="Lakeside Auto Group")
    ).text
    assert text.count("Lakeside Auto Group") == 1


def test_opt_in_requests_ask_for_yes_and_offer_stop(renderer: TemplateRenderer) -> None:
    for name in ("customer/opt_in_request.employee_started", "customer/opt_in_request.customer_started"):
        text = renderer.render(name, variables(name)).text
        assert "Lakeside Auto Group" in text
        assert re.search(r"\bYES\b", text) and re.search(r"\bSTOP\b", text)


def test_employee_started_request_greets_by_name_only_when_known(renderer: TemplateRenderer) -> None:
    name = "customer/opt_in_request.employee_started"
    assert renderer.render(name, variables(name)).text.startswith("Hi Jordan, Dana Whitfield")
    assert renderer.render(name, variables(name, contact_name="")).text.startswith("Dana Whitfield")


def test_keywords_come_from_the_variables(renderer: TemplateRenderer) -> None:
    name = "customer/reauth_request"
    text = renderer.render(name, variables(name, yes_word="SI", stop_word="ALTO")).text
    assert re.search(r"\bSI\b", text) and re.search(r"\bALTO\b", text)
    assert "YES" not in text and "STOP" not in text


def test_pin_message_carries_the_code_and_its_validity(renderer: TemplateRenderer) -> None:
    text = renderer.render("customer/pin", variables("customer/pin")).text
    assert "482913" in text and "10 minutes" in text


def test_disclaimer_says_business_and_stop(renderer: TemplateRenderer) -> None:
    text = renderer.render("customer/disclaimer", variables("customer/disclaimer")).text
    assert "Lakeside Auto Group" in text and "business" in text and re.search(r"\bSTOP\b", text)


def test_contact_opted_in_mentions_the_held_message_only_when_there_is_one(
    renderer: TemplateRenderer,
) -> None:
    name = "employee/contact_opted_in"
    with_held = renderer.render(name, variables(name)).text
    without = renderer.render(name, variables(name, held_message="")).text
    assert "Can you come by at 3?" in with_held and "held" in with_held
    assert "held" not in without and without.startswith("Jordan opted in")


def test_contact_opted_out_gives_the_reason(renderer: TemplateRenderer) -> None:
    name = "employee/contact_opted_out"
    assert "(replied STOP)" in renderer.render(name, variables(name)).text
    assert "(" not in renderer.render(name, variables(name, reason="", contact_name="")).text


def test_employee_notes_fall_back_to_a_generic_contact(renderer: TemplateRenderer) -> None:
    for name in ("employee/contact_opted_in", "employee/contact_opted_out", "employee/pin_sent"):
        assert renderer.render(name, variables(name, contact_name="")).text.startswith("Your contact")


def test_marketing_footer_has_the_unsubscribe_link(renderer: TemplateRenderer) -> None:
    text = renderer.render("email/marketing_footer", variables("email/marketing_footer")).text
    assert "https://lakeside-auto.example/unsubscribe/8f3a2c" in text


def test_text_is_not_html_escaped(renderer: TemplateRenderer) -> None:
    name = "customer/disclaimer"
    assert (
        "Tom & Jerry's <Shop>" in renderer.render(name, variables(name, org_name="Tom & Jerry's <Shop>")).text
    )


@pytest.mark.parametrize("name", CUSTOMER_NAMES)
def test_customer_text_fits_one_sms_with_typical_values(renderer: TemplateRenderer, name: str) -> None:
    text = renderer.render(name, variables(name)).text
    assert len(text) <= 160, (len(text), text)
    assert set(text) <= GSM7_BASIC, set(text) - GSM7_BASIC


@pytest.mark.parametrize("name", CUSTOMER_NAMES)
def test_customer_text_stays_within_two_sms_with_long_values(renderer: TemplateRenderer, name: str) -> None:
    text = renderer.render(name, variables(name, LONG)).text
    assert len(text) <= 320, (len(text), text)


# --- org overrides ---------------------------------------------------------------------------


def test_a_good_override_is_used(renderer: TemplateRenderer) -> None:
    name = "customer/help"
    result = renderer.render(name, variables(name), override="{{ org_name }} help: {{ help_contact }}\n\n")
    assert result.text == "Lakeside Auto Group help: +1 555 010 0199"
    assert result.used_fallback is False and result.error is None


def test_override_block_lines_are_trimmed(renderer: TemplateRenderer) -> None:
    source = "  {% if contact_name %}\nHi {{ contact_name }}\n  {% endif %}\nThanks\n"
    assert (
        renderer.render("customer/disclaimer", variables("customer/disclaimer"), source).text
        == "Hi Jordan\nThanks"
    )


@pytest.mark.parametrize(
    ("source", "in_error"),
    [
        ("{{ org_name }} {{ coupon_code }}", "coupon_code"),
        ("{{ org_name }\n", "syntax error on line 1"),
        ("{{ ''.__class__.__mro__ }}", "__class__"),
        ("{{ org_name.__class__.__subclasses__() }}", "__class__"),
        ("{{ 1 // 0 }}", "ZeroDivisionError"),
        ("{% if false %}x{% endif %}   \n", "empty"),
        ("{{ pin }}", "pin"),  # a variable of another template
    ],
)
def test_a_broken_override_falls_back_to_the_default(
    renderer: TemplateRenderer, source: str, in_error: str, caplog: pytest.LogCaptureFixture
) -> None:
    name = "customer/opt_out_confirmation"
    default = renderer.render(name, variables(name))
    with caplog.at_level(logging.ERROR, logger="optflow.templates"):
        result = renderer.render(name, variables(name), override=source)
    assert result.text == default.text
    assert result.used_fallback is True
    assert result.error is not None and in_error in result.error
    logged = [r for r in caplog.records if r.name == "optflow.templates"]
    assert logged and name in logged[0].getMessage() and in_error in logged[0].getMessage()


def test_the_log_of_a_failed_override_does_not_leak_variable_values(
    renderer: TemplateRenderer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="optflow.templates"):
        renderer.render("customer/pin", variables("customer/pin"), override="{{ pin + 1 }}")
    assert caplog.records and "482913" not in caplog.text


def test_an_unknown_template_is_refused(renderer: TemplateRenderer) -> None:
    with pytest.raises(InvalidInput, match="customer/welcome"):
        renderer.render("customer/welcome", variables("customer/help"))
    with pytest.raises(InvalidInput, match=r"customer/opt_out_confirmation\.j2"):
        renderer.check_override("customer/opt_out_confirmation.j2", "hi")


# --- compiled once ---------------------------------------------------------------------------


def test_a_default_is_compiled_once_and_only_when_first_used() -> None:
    counting = CountingRenderer(REPO_TEMPLATES)
    assert counting.compiled == []
    for _ in range(3):
        counting.render("customer/help", variables("customer/help"))
    assert counting.compiled == ["customer/help"]


def test_an_override_is_compiled_once_per_source() -> None:
    counting = CountingRenderer(REPO_TEMPLATES)
    name = "customer/disclaimer"
    for _ in range(3):
        counting.render(name, variables(name), override="From {{ org_name }}. {{ stop_word }} to end.")
    assert counting.compiled == [f"override of {name}"]
    counting.render(name, variables(name), override="{{ org_name }}: reply {{ stop_word }} to end.")
    assert counting.compiled == [f"override of {name}"] * 2


def test_a_broken_override_is_not_recompiled_on_every_render() -> None:
    counting = CountingRenderer(REPO_TEMPLATES)
    name = "customer/disclaimer"
    for _ in range(3):
        assert counting.render(name, variables(name), override="{% if %}").used_fallback
    assert counting.compiled == [f"override of {name}", name]


def test_the_override_cache_is_bounded_and_evicts_the_least_recently_used() -> None:
    counting = CountingRenderer(REPO_TEMPLATES, override_cache_size=2)
    name = "customer/disclaimer"
    a, b, c = (f"{letter} {{{{ org_name }}}}" for letter in "ABC")
    for source in (a, b, a, c):  # c evicts b, the least recently used
        counting.render(name, variables(name), override=source)
    assert len(counting.compiled) == 3
    counting.render(name, variables(name), override=a)
    assert len(counting.compiled) == 3
    counting.render(name, variables(name), override=b)
    assert len(counting.compiled) == 4


# --- limits -----------------------------------------------------------------------------------

HUGE_POWER = "{{ (10**(2*10**7)) % 7 }}"  # folded into a constant at compile time before: 34 s
# Cost grows with the square of the contact's name: trivial for "Jordan", 40,000 steps for 200 characters.
NAME_SQUARED = "{{ org_name }}{% for a in contact_name %}{% for b in contact_name %}.{% endfor %}{% endfor %}"
LONG_NAME = "Maria-Jose O'Neil de la Cruz " * 7  # 203 characters


def fallbacks(name: str, reason: str, fallback: str) -> float:
    registry = CollectorRegistry()
    registry.register(template_fallback_counter())
    return registry.get_sample_value(
        "optflow_template_fallback_total", {"template": name, "reason": reason, "fallback": fallback}) or 0.0


def test_a_huge_constant_is_refused_and_the_packaged_text_is_used(renderer: TemplateRenderer) -> None:
    """Arithmetic is intercepted, so it is never folded while compiling and each operation is
    checked before it runs: the 20-million-digit power is refused, not computed."""
    name = "customer/opt_out_confirmation"
    before = fallbacks(name, "limit", "packaged")
    result = renderer.render(name, variables(name), override=HUGE_POWER)
    assert result.source is TextSource.PACKAGED and result.used_fallback and result.reason == "limit"
    assert result.text == renderer.render(name, variables(name)).text
    assert result.error is not None and "1024 bits" in result.error
    assert fallbacks(name, "limit", "packaged") == before + 1
    error = renderer.check_override(name, HUGE_POWER)
    assert error is not None and "over the template limits" in error


@pytest.mark.parametrize("source", [
    "{{ 2 ** 4000 }}",
    "{{ 7 ** (7 ** 7) }}",
    "{{ (2 ** 600) * (2 ** 600) }}",
])
def test_integers_stay_within_their_limit(renderer: TemplateRenderer, source: str) -> None:
    result = renderer.render("customer/help", variables("customer/help"), override=source)
    assert result.reason == "limit" and result.source is TextSource.PACKAGED


def test_arithmetic_within_the_limits_still_works(renderer: TemplateRenderer) -> None:
    source = ("{{ org_name }} {{ 2 ** 10 }} {{ 7 * 6 }} {{ 10 % 4 }} {{ '%-5s|' % 'ab' }} {{ 'ab' ~ 'cd' }} "
              "{{ 'x' * 3 }}")
    result = renderer.render("customer/help", variables("customer/help"), override=source)
    assert result.source is TextSource.OVERRIDE
    assert result.text == "Lakeside Auto Group 1024 42 2 ab   | abcd xxx"


def test_a_cost_that_grows_with_the_name_is_refused_when_saved(renderer: TemplateRenderer) -> None:
    name = "customer/help"
    assert renderer.render(name, variables(name), override=NAME_SQUARED).source is TextSource.OVERRIDE
    error = renderer.check_override(name, NAME_SQUARED)
    assert error is not None
    assert "over the template limits" in error and "long values" in error and "steps" in error


def test_a_cost_that_grows_with_the_name_is_capped_when_rendered(renderer: TemplateRenderer) -> None:
    """An override saved before the check existed (or written to the database directly)."""
    name = "customer/opt_out_confirmation"
    result = renderer.render(name, variables(name, contact_name=LONG_NAME), override=NAME_SQUARED)
    assert result.source is TextSource.PACKAGED and result.reason == "limit"
    assert "steps" in (result.error or "")
    assert result.text.startswith("Lakeside Auto Service: you are unsubscribed")


@pytest.mark.parametrize("source", [
    "{{ org_name }}{{ 'x' * 10_000_000 }}",  # one huge value
    "{{ org_name }}{% for i in range(10) %}{{ 'y' * 60000 }}{% endfor %}",  # output grows chunk by chunk
    "{% set ns = namespace(s='ab') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}",
    "{% set a %}xy{% endset %}" + "{% set a %}{{ a }}{{ a }}{% endset %}" * 40 + "{{ a }}",
    "{{ org_name }}{{ contact_name|replace('a', contact_name)|replace('a', contact_name)|replace('a', contact_name) }}",
    "{{ ([org_name] * 1000)|join(org_name * 100) }}",
    "{{ '%99999999d' % 1 }}",
    "{{ '{:>99999999}'.format(1) }}",
    "{{ org_name.center(99999999) }}",
    "{{ org_name|center(99999999) }}",
    "{% filter indent(60000) %}{{ 'a\\n' * 1000 }}{% endfilter %}",
    "{{ (1).to_bytes(99999999, 'big') }}",
    "{{ range(10 ** 8)|list|length }}",
    "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
])
def test_output_and_intermediate_values_are_capped(renderer: TemplateRenderer, source: str) -> None:
    name = "customer/disclaimer"
    result = renderer.render(name, variables(name, contact_name="a" * 200), override=source)
    assert result.source is TextSource.PACKAGED and result.reason == "limit", result.error
    error = renderer.check_override(name, source)
    assert error is not None and "over the template limits" in error


def test_ten_megabytes_of_output_are_refused_when_saved(renderer: TemplateRenderer) -> None:
    error = renderer.check_override("customer/help", "{% for i in range(1000) %}{{ 'x' * 10000 }}{% endfor %}")
    assert error is not None and "over the template limits" in error


def test_a_long_held_message_may_be_shown_but_not_multiplied(renderer: TemplateRenderer) -> None:
    """The output limit grows with the values passed in: a 100 KB message is shown whole."""
    name = "employee/contact_opted_in"
    held = "long message " * 8000
    shown = renderer.render(name, variables(name, held_message=held))
    assert shown.source is TextSource.PACKAGED and held.strip() in shown.text
    tripled = renderer.render(name, variables(name, held_message=held), override="{{ held_message * 3 }}")
    assert tripled.source is TextSource.PACKAGED and tripled.reason == "limit"


def test_a_template_over_the_source_limit_is_refused(renderer: TemplateRenderer) -> None:
    source = "{{ org_name }}" + "x" * renderer.limits.max_source_chars
    assert "longer than" in (renderer.check_override("customer/help", source) or "")
    result = renderer.render("customer/help", variables("customer/help"), override=source)
    assert result.reason == "limit" and result.source is TextSource.PACKAGED


def test_the_cpu_time_limit_ends_a_render(template_copy: Path) -> None:
    """Steps that are each cheap but many: with a limit of no CPU time at all the render stops
    at its second look at the clock (the first starts the count), whatever the machine's speed."""
    limits = TemplateLimits(max_cpu_seconds=0.0)
    name = "customer/help"
    result = TemplateRenderer(template_copy, limits=limits).render(
        name, variables(name), override="{% for i in range(100) %}{{ org_name|upper }}{% endfor %}")
    assert result.reason == "limit" and "CPU" in (result.error or "")


def test_the_log_of_an_over_limit_override_names_no_values(
    renderer: TemplateRenderer, caplog: pytest.LogCaptureFixture
) -> None:
    name = "customer/help"
    with caplog.at_level(logging.ERROR, logger="optflow.templates"):
        renderer.render(name, variables(name), override="{{ {'a': 1}[contact_name] }}")
        renderer.render(name, variables(name), override=HUGE_POWER)
    assert len(caplog.records) == 2
    assert "Jordan" not in caplog.text and "<contact_name>" in caplog.text
    assert "(limit)" in caplog.text


def test_a_checked_override_is_not_checked_again(renderer: TemplateRenderer) -> None:
    """The settings API checks an override before its transaction; the check inside it is then a look-up."""
    counting = CountingRenderer(REPO_TEMPLATES)
    source = "{{ org_name }}: reply {{ stop_word }} to opt out."
    assert counting.check_override("customer/disclaimer", source) is None
    assert counting.check_override("customer/disclaimer", source) is None
    assert counting.compiled == ["override of customer/disclaimer"]


# --- check_override --------------------------------------------------------------------------


def test_check_override_accepts_a_good_template(renderer: TemplateRenderer) -> None:
    assert renderer.check_override("customer/pin", "Code {{ pin }}, {{ pin_valid_minutes }} min.") is None


def test_check_override_names_the_line_of_a_syntax_error(renderer: TemplateRenderer) -> None:
    error = renderer.check_override("customer/help", "Hello\n{% if contact_name %}\nHi\n")
    assert error is not None and "syntax error on line 3" in error and "endif" in error


def test_check_override_names_an_unknown_variable_and_its_line(renderer: TemplateRenderer) -> None:
    error = renderer.check_override("customer/help", "{{ org_name }}\n{{ help_contact }} {{ phone }}")
    assert error is not None
    assert "unknown variable 'phone' on line 2" in error and "help_contact" in error


def test_check_override_finds_unknown_variables_in_branches_never_taken(renderer: TemplateRenderer) -> None:
    error = renderer.check_override("customer/help", "{% if false %}{{ nope }}{% endif %}{{ org_name }}")
    assert error is not None and "'nope'" in error


def test_check_override_knows_each_templates_own_variables(renderer: TemplateRenderer) -> None:
    assert renderer.check_override("employee/contact_opted_out", "Out: {{ reason }}") is None
    error = renderer.check_override("employee/contact_opted_in", "Out: {{ reason }}")
    assert error is not None and "'reason'" in error


def test_check_override_reports_a_sandbox_violation(renderer: TemplateRenderer) -> None:
    error = renderer.check_override("customer/help", "{{ ''.__class__.__mro__ }}")
    assert error is not None and "SecurityError" in error and "__class__" in error


def test_check_override_tries_the_optional_variables_empty_too(renderer: TemplateRenderer) -> None:
    error = renderer.check_override("customer/help", "{{ org_name }} {{ contact_name[0] }}")
    assert error is not None and "UndefinedError" in error


def test_check_override_refuses_an_empty_message(renderer: TemplateRenderer) -> None:
    assert renderer.check_override("customer/help", "{# nothing #}\n") == "renders to an empty message"


# --- when a default itself is broken ---------------------------------------------------------


def test_opt_out_confirmation_always_has_a_text_even_with_a_broken_default(template_copy: Path) -> None:
    (template_copy / "customer/opt_out_confirmation.j2").write_text("{{ broken ")
    name = "customer/opt_out_confirmation"
    result = TemplateRenderer(template_copy).render(name, variables(name), override="{{ nope }}")
    assert result.used_fallback is True
    assert "Lakeside Auto Service" in result.text and re.search(r"\bSTART\b", result.text)
    assert not MARKETING_WORDS.search(result.text)
    assert result.error is not None and "override" in result.error and "packaged" in result.error


def test_help_always_has_a_text_even_with_a_missing_default(template_copy: Path) -> None:
    (template_copy / "customer/help.j2").unlink()
    result = TemplateRenderer(template_copy).render("customer/help", variables("customer/help"))
    assert result.used_fallback is True and result.error is not None
    assert "+1 555 010 0199" in result.text and re.search(r"\bSTOP\b", result.text)
    assert "rates may apply" in result.text


def test_the_last_resort_text_needs_no_variables_at_all(renderer: TemplateRenderer) -> None:
    """A caller that forgot every variable still gets an opt-out confirmation and a HELP reply."""
    opt_out = renderer.render("customer/opt_out_confirmation", {})
    assert opt_out.used_fallback is True and re.search(r"\bSTART\b", opt_out.text)
    assert re.search(r"\bSTOP\b", renderer.render("customer/help", {}).text)


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_template_has_a_built_in_text_used_when_its_packaged_one_is_broken(
    template_copy: Path, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A broken packaged template never makes `render` raise: a note to the employee that fails
    must not take the customer's reply, or the consent change, down with it."""
    assert set(BUILT_IN_TEXTS) == set(TEMPLATE_NAMES)
    (template_copy / f"{name}.j2").write_text("{% for %}")
    with caplog.at_level(logging.CRITICAL, logger="optflow.templates"):
        result = TemplateRenderer(template_copy).render(name, variables(name))
    assert result.source is TextSource.BUILT_IN and result.used_fallback and result.reason == "error"
    assert result.text == BUILT_IN_TEXTS[name](variables(name)) and result.text.strip()
    assert result.error is not None and "syntax error" in result.error
    assert [r.levelno for r in caplog.records if r.name == "optflow.templates"] == [logging.CRITICAL]


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_every_built_in_text_needs_no_variables(name: str) -> None:
    assert BUILT_IN_TEXTS[name]({}).strip()


def test_a_packaged_template_that_raises_falls_back_to_the_built_in_text(template_copy: Path) -> None:
    (template_copy / "employee/contact_opted_out.j2").write_text("{{ contact_name }} {{ 1 // 0 }}")
    name = "employee/contact_opted_out"
    result = TemplateRenderer(template_copy).render(name, variables(name))
    assert result.source is TextSource.BUILT_IN and result.reason == "error"
    assert result.text == "Jordan opted out (replied STOP). Nothing more will be sent to them."


# --- where the templates are found -----------------------------------------------------------


def test_template_dir_comes_from_the_environment_when_set(
    template_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (template_copy / "customer/disclaimer.j2").write_text("Custom {{ org_name }}")
    monkeypatch.setenv(TEMPLATE_DIR_ENV, str(template_copy))
    assert default_template_dir() == template_copy
    assert TemplateRenderer().render("customer/disclaimer", variables("customer/disclaimer")).text == (
        "Custom Lakeside Auto Group"
    )


def test_template_dir_defaults_to_the_packaged_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TEMPLATE_DIR_ENV, raising=False)
    found = default_template_dir()
    assert {str(p.relative_to(found)) for p in found.rglob("*.j2")} >= {f"{name}.j2" for name in TEMPLATE_NAMES}
    assert (found / "customer/opt_out_confirmation.es.j2").is_file()


def test_a_missing_template_dir_fails_at_startup_not_at_the_first_message(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=TEMPLATE_DIR_ENV):
        TemplateRenderer(tmp_path / "nowhere")


class RunCountingRenderer(TemplateRenderer):
    """The real renderer, counting the renders it actually runs."""

    def __init__(self, template_dir: Path | None = None) -> None:
        super().__init__(template_dir)
        self.runs = 0

    def _run(self, template: Template, variables: Mapping[str, object]) -> str:
        self.runs += 1
        return super()._run(template, variables)


def test_a_packaged_text_is_rendered_once_for_the_values_it_reads() -> None:
    renderer = RunCountingRenderer()
    first = renderer.render("customer/help", TYPICAL).text
    # The HELP text does not read the contact's name: the same text serves every customer.
    assert renderer.render("customer/help", {**TYPICAL, "contact_name": "Robin"}).text == first
    assert renderer.runs == 1
    # It reads the org's name: another value is another text.
    other = renderer.render("customer/help", {**TYPICAL, "org_name": "Harbour Motors"}).text
    assert "Harbour Motors" in other and other != first
    assert renderer.runs == 2
    # A text that reads a customer's own values is rendered every time, not kept in memory:
    # the note naming the contact, and the PIN above all.
    renderer.render("employee/contact_opted_out", TYPICAL)
    renderer.render("employee/contact_opted_out", TYPICAL)
    assert renderer.runs == 4
    renderer.render("customer/pin", {**TYPICAL, "pin": "123456", "pin_valid_minutes": 10})
    renderer.render("customer/pin", {**TYPICAL, "pin": "123456", "pin_valid_minutes": 10})
    assert renderer.runs == 6


def test_a_packaged_text_decided_by_chance_is_rendered_every_time(template_copy: Path) -> None:
    templates = template_copy
    (templates / "customer" / "help.j2").write_text(
        "{{ ['Hi', 'Hello', 'Hey'] | random }} from {{ org_name }}. Reply {{ stop_word }} to opt out.")
    renderer = RunCountingRenderer(templates)
    texts = {renderer.render("customer/help", TYPICAL).text for _ in range(30)}
    assert renderer.runs == 30
    assert len(texts) > 1
