"""Render the messages sent on consent changes from Jinja templates.

The packaged templates live in `message_templates/<name>.j2` (English) and
`message_templates/<name>.<language>.j2` (Spanish, French, Portuguese); an org may override any
of them, per language, with its own source text. Org text is untrusted, so everything runs in a sandbox whose every
render is bounded in steps, sizes and CPU time (`template_limits.MeteredSandbox`), and `render`
always returns a text: the org's override when it works, else the packaged template, else a
built-in text written in Python. Each fallback is logged (without the values rendered) and
counted (`optflow_template_fallback_total`); see docs/templates.md.

Compiling a template costs about 60 times as much as rendering it, so every template is compiled
once: a packaged one at its first use, an override once per distinct source text (in a bounded
LRU keyed by the source itself).
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from prometheus_client import Counter

from optflow.adapters.template_limits import (
    Budget,
    MeteredSandbox,
    TemplateLimitExceeded,
    TemplateLimits,
    metered,
    size_of,
)
from optflow.domain.languages import DEFAULT_LANGUAGE, SUPPORTED_LANGUAGES, YES_WORDS
from optflow.domain.model import InvalidInput
from optflow.domain.templates import TEMPLATE_NAMES, packaged_file_name

COMMON_VARIABLES: frozenset[str] = frozenset(
    {
        "org_name",
        "program_name",
        "employee_name",
        "contact_name",
        "channel",
        "help_contact",
        "message_frequency",
        "stop_word",
        "start_word",
        "help_word",
        "yes_word",
    }
)

_EXTRA_VARIABLES: Mapping[str, frozenset[str]] = {
    "customer/pin": frozenset({"pin", "pin_valid_minutes"}),
    "employee/contact_opted_in": frozenset({"held_message"}),
    "employee/opt_in_request_sent": frozenset({"held_message"}),
    "employee/opt_in_request_sent.customer_started": frozenset({"held_message"}),
    "employee/contact_opted_in.customer_started": frozenset({"held_message"}),
    "employee/contact_opted_out.customer_started": frozenset({"reason"}),
    "employee/contact_opted_out": frozenset({"reason"}),
    "email/marketing_footer": frozenset({"unsubscribe_url"}),
}

TEMPLATE_VARIABLES: Mapping[str, frozenset[str]] = MappingProxyType(
    {name: COMMON_VARIABLES | _EXTRA_VARIABLES.get(name, frozenset()) for name in TEMPLATE_NAMES}
)
"""Every variable each template may use: the common ones plus its own."""

TEMPLATE_DIR_ENV = "OPTFLOW_TEMPLATE_DIR"
DEFAULT_OVERRIDE_CACHE_SIZE = 256

_log = logging.getLogger("optflow.templates")

# Values for check_override's trial renders: one pass with every variable filled, one with the
# optional ones empty, so both sides of an `{% if contact_name %}` are exercised.
_SAMPLE_VALUES: Mapping[str, object] = {
    "org_name": "Example Motors",
    "program_name": "Example Motors Service",
    "employee_name": "Sam Lee",
    "contact_name": "Alex",
    "channel": "text",
    "help_contact": "+1 555 010 0100",
    "message_frequency": "Msg frequency varies",
    "stop_word": "STOP",
    "start_word": "START",
    "help_word": "HELP",
    "yes_word": "YES",
    "pin": "482913",
    "pin_valid_minutes": 10,
    "held_message": "Is the car ready?",
    "unsubscribe_url": "https://example.com/u/abc",
    "reason": "replied STOP",
}
_OPTIONAL_VARIABLES = ("contact_name", "held_message", "reason")


def _long(seed: str, length: int) -> str:
    return (seed * (length // len(seed) + 1))[:length]


# The third trial render of check_override: every value as long as it plausibly gets (names are
# capped at 200 characters by the API; 256 here), so a template whose cost grows with a value is
# refused when it is saved rather than failing later for the one contact with a long name.
_LONG_SAMPLE_VALUES: Mapping[str, object] = {
    "org_name": _long("Northern Lakeside Automotive Group ", 256),
    "program_name": _long("Northern Lakeside Service Reminders ", 256),
    "employee_name": _long("Alexandra Montgomery-Whitfield ", 256),
    "contact_name": _long("Maria-Jose O'Neil de la Cruz ", 256),
    "channel": "whatsapp",
    "help_contact": _long("https://northern-lakeside.example.com/help/", 256),
    "message_frequency": _long("Up to 4 msgs per month, more during service visits ", 256),
    "stop_word": _long("STOPALL", 40),
    "start_word": _long("UNSTOP", 40),
    "help_word": _long("INFO", 40),
    "yes_word": _long("YESPLEASE", 40),
    "pin": "9" * 20,
    "pin_valid_minutes": 24 * 60,
    "held_message": _long("Is the car ready?\tI can come by at 3.\nThanks, Maria\n", 2000),
    "unsubscribe_url": _long("https://northern-lakeside.example.com/u/0123456789abcdef", 320),
    "reason": 'replied "' + _long("Please stop texting me ", 40) + '"',
}
_LONG_TRIAL = "with long values (256-character names)"


class TextSource(StrEnum):
    """Where a rendered text came from, best first."""

    OVERRIDE = "override"  # the org's own template
    PACKAGED = "packaged"  # message_templates/ (or $OPTFLOW_TEMPLATE_DIR)
    BUILT_IN = "built_in"  # the last-resort text written in Python below


@dataclass(frozen=True)
class Rendered:
    text: str
    name: str
    source: TextSource
    error: str | None = None  # what failed on the way to `source`, if anything (no personal values)
    reason: str | None = None  # "limit" or "error": why the first choice was not used
    language: str = DEFAULT_LANGUAGE  # the language of `text`: the one asked for, or English

    @property
    def used_fallback(self) -> bool:
        """True when an org override or the packaged template failed and a fallback was used."""
        return self.error is not None


@dataclass(frozen=True)
class _Failure:
    reason: str  # "limit": over a TemplateLimits limit; "error": anything else
    message: str


def template_fallback_counter() -> Counter:
    """Renders that fell back, by template, reason and the text used instead: a broken or
    over-limit override (fallback="packaged"), a broken packaged template (fallback="built_in").
    One per process, made at first use; `ServerMetrics` exposes it."""
    global _fallback_counter
    if _fallback_counter is None:
        _fallback_counter = Counter(
            "optflow_template_fallback", "Template renders that fell back to the next text: from an org's "
            "override to the packaged template, or from the packaged template to the built-in text.",
            ("template", "reason", "fallback"), registry=None)
    return _fallback_counter


_fallback_counter: Counter | None = None


def default_template_dir() -> Path:
    """Where the packaged templates are: `$OPTFLOW_TEMPLATE_DIR`, else the installed package
    data (`optflow/message_templates`), else `message_templates/` of the source checkout."""
    configured = os.environ.get(TEMPLATE_DIR_ENV)
    if configured:
        return Path(configured)
    packaged = Path(str(importlib.resources.files("optflow"))) / "message_templates"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[3] / "message_templates"


# ----------------------------------------------------------------------------- built-in texts
# The last resort when the packaged template itself fails (a broken deployment, an edited file,
# a caller bug): short, neutral, and built from whatever variables are there, or none. Every
# template has one, so `render` always returns a text and a failing note to the employee can
# never take the customer's reply (or the consent change) down with it.


def _text_of(variables: Mapping[str, object], key: str, default: str) -> str:
    """A variable as text for a built-in message, which must not fail whatever it is given."""
    try:
        value = str(variables.get(key) or "").strip()
    except Exception:
        return default
    return value or default


def _sender(v: Mapping[str, object]) -> str:
    return _text_of(v, "program_name", _text_of(v, "org_name", "This sender"))


def _org(v: Mapping[str, object]) -> str:
    return _text_of(v, "org_name", _text_of(v, "program_name", "This sender"))


def _contact(v: Mapping[str, object]) -> str:
    return _text_of(v, "contact_name", "Your contact")


def _opt_out_built_in(v: Mapping[str, object]) -> str:
    return (f"{_sender(v)}: you are unsubscribed and will get no more messages. "
            f"Reply {_text_of(v, 'start_word', 'START')} to resubscribe.")


def _help_built_in(v: Mapping[str, object]) -> str:
    contact = _text_of(v, "help_contact", "")
    reach = f" For help, contact {contact}." if contact else ""
    return f"{_sender(v)}:{reach} Msg & data rates may apply. Reply {_text_of(v, 'stop_word', 'STOP')} to opt out."


def _opt_in_request_built_in(v: Mapping[str, object]) -> str:
    rates = "" if _text_of(v, "channel", "") == "email" else " Msg & data rates may apply."
    return (f"{_org(v)} would like to send you messages. Reply {_text_of(v, 'yes_word', 'YES')} to agree or "
            f"{_text_of(v, 'stop_word', 'STOP')} to opt out.{rates}")


def _opt_in_confirmation_built_in(v: Mapping[str, object]) -> str:
    return (f"{_sender(v)}: you are subscribed. Msg & data rates may apply. Reply {_text_of(v, 'help_word', 'HELP')} "
            f"for help, {_text_of(v, 'stop_word', 'STOP')} to opt out.")


def _reauth_built_in(v: Mapping[str, object]) -> str:
    return (f"{_org(v)}: reply {_text_of(v, 'yes_word', 'YES')} to keep getting our messages or "
            f"{_text_of(v, 'stop_word', 'STOP')} to opt out.")


def _pin_built_in(v: Mapping[str, object]) -> str:
    minutes = _text_of(v, "pin_valid_minutes", "")
    valid = f" It is valid for {minutes} minutes." if minutes else ""
    return f"{_org(v)}: your code is {_text_of(v, 'pin', '(not available)')}.{valid}"


def _disclaimer_built_in(v: Mapping[str, object]) -> str:
    return f"This message is from {_org(v)}, a business. Reply {_text_of(v, 'stop_word', 'STOP')} to opt out."


def _request_sent_built_in(v: Mapping[str, object]) -> str:
    held = (f" Your message is held until they reply {_text_of(v, 'yes_word', 'YES')}."
            if _text_of(v, "held_message", "") else "")
    return f"Opt-in request sent to {_text_of(v, 'contact_name', 'the contact')}.{held}"


def _customer_asked_first_built_in(v: Mapping[str, object]) -> str:
    held = (f" Their message reaches you once they reply {_text_of(v, 'yes_word', 'YES')}."
            if _text_of(v, "held_message", "") else "")
    return f"{_text_of(v, 'contact_name', 'A contact')} wrote to you and was asked to opt in first.{held}"


def _opted_in_built_in(v: Mapping[str, object]) -> str:
    held = _text_of(v, "held_message", "")
    return f"{_contact(v)} opted in." + (f" The held message is delivered now: {held}" if held else "")


def _opted_out_built_in(v: Mapping[str, object]) -> str:
    reason = _text_of(v, "reason", "")
    return f"{_contact(v)} opted out" + (f" ({reason})" if reason else "") + ". Nothing more will be sent to them."


def _pin_sent_built_in(v: Mapping[str, object]) -> str:
    return (f"{_contact(v)} replied {_text_of(v, 'yes_word', 'YES')} and was sent a one-time code. "
            "Ask them to read it to you, then enter it.")


def _footer_built_in(v: Mapping[str, object]) -> str:
    return f"You receive this from {_org(v)}.\nUnsubscribe: {_text_of(v, 'unsubscribe_url', '(reply STOP)')}"


BUILT_IN_TEXTS: Mapping[str, Callable[[Mapping[str, object]], str]] = MappingProxyType({
    "customer/opt_in_request.employee_started": _opt_in_request_built_in,
    "customer/opt_in_request.customer_started": _opt_in_request_built_in,
    "customer/opt_in_confirmation": _opt_in_confirmation_built_in,
    "customer/opt_out_confirmation": _opt_out_built_in,
    "customer/help": _help_built_in,
    "customer/reauth_request": _reauth_built_in,
    "customer/pin": _pin_built_in,
    "customer/disclaimer": _disclaimer_built_in,
    "employee/opt_in_request_sent": _request_sent_built_in,
    "employee/contact_opted_in": _opted_in_built_in,
    "employee/contact_opted_out": _opted_out_built_in,
    "employee/pin_sent": _pin_sent_built_in,
    "email/marketing_footer": _footer_built_in,
    "customer/opt_in_confirmation.customer_started": _opt_in_confirmation_built_in,
    "customer/opt_out_confirmation.customer_started": _opt_out_built_in,
    "employee/opt_in_request_sent.customer_started": _customer_asked_first_built_in,
    "employee/contact_opted_in.customer_started": _opted_in_built_in,
    "employee/contact_opted_out.customer_started": _opted_out_built_in,
})
"""The last-resort text of every template, in English (tests check that none is missing)."""

# The last-resort texts of the customer's templates in the other languages: format strings over
# the values `_built_in_values` computes (never the org's text: these cannot fail).
_TRANSLATED_BUILT_INS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "es": {
        "customer/opt_out_confirmation": "{sender}: se ha dado de baja y no recibirá más mensajes. Responda "
                                         "{start_word} para volver a suscribirse.",
        "customer/help": "{sender}:{help_line} Pueden aplicarse tarifas de mensajes y datos. Responda {stop_word} "
                         "para cancelar.",
        "customer/opt_in_request.employee_started": "{org} desea enviarle mensajes. Responda {yes_word} para aceptar "
                                                    "o {stop_word} para cancelar. Pueden aplicarse tarifas de "
                                                    "mensajes y datos.",
        "customer/opt_in_confirmation": "{sender}: se ha suscrito. Pueden aplicarse tarifas de mensajes y datos. "
                                        "Responda {help_word} para ayuda, {stop_word} para cancelar.",
        "customer/reauth_request": "{org}: responda {yes_word} para seguir recibiendo nuestros mensajes o "
                                   "{stop_word} para cancelar.",
        "customer/pin": "{org}: su código es {pin}.{valid_line}",
        "customer/disclaimer": "Este mensaje es de {org}, una empresa. Responda {stop_word} para cancelar.",
        "email/marketing_footer": "Recibe este correo de {org}.\nCancelar la suscripción: {unsubscribe_url}",
        # pieces
        "help_line": " Ayuda: {}.", "valid_line": " Es válido por {} minutos.", "sender": "Este remitente",
        "pin": "(no disponible)", "unsubscribe_url": "(responda STOP)",
    },
    "fr": {
        "customer/opt_out_confirmation": "{sender} : votre désabonnement est confirmé, vous ne recevrez plus de "
                                         "messages. Répondez {start_word} pour vous réabonner.",
        "customer/help": "{sender} :{help_line} Des frais de messages et de données peuvent s'appliquer. Répondez "
                         "{stop_word} pour vous désabonner.",
        "customer/opt_in_request.employee_started": "{org} souhaite vous envoyer des messages. Répondez {yes_word} "
                                                    "pour accepter ou {stop_word} pour refuser. Des frais de "
                                                    "messages et de données peuvent s'appliquer.",
        "customer/opt_in_confirmation": "{sender} : inscription confirmée. Des frais de messages et de données "
                                        "peuvent s'appliquer. Répondez {help_word} pour de l'aide, {stop_word} pour "
                                        "vous désabonner.",
        "customer/reauth_request": "{org} : répondez {yes_word} pour continuer à recevoir nos messages ou "
                                   "{stop_word} pour vous désabonner.",
        "customer/pin": "{org} : votre code est {pin}.{valid_line}",
        "customer/disclaimer": "Ce message provient de {org}, une entreprise. Répondez {stop_word} pour vous "
                               "désabonner.",
        "email/marketing_footer": "Vous recevez ce message de {org}.\nSe désabonner : {unsubscribe_url}",
        "help_line": " Aide : {}.", "valid_line": " Il est valable {} minutes.", "sender": "Cet expéditeur",
        "pin": "(non disponible)", "unsubscribe_url": "(répondez STOP)",
    },
    "pt": {
        "customer/opt_out_confirmation": "{sender}: sua inscrição foi cancelada e você não receberá mais "
                                         "mensagens. Responda {start_word} para voltar a receber.",
        "customer/help": "{sender}:{help_line} Podem ser cobradas tarifas de mensagens e dados. Responda "
                         "{stop_word} para cancelar.",
        "customer/opt_in_request.employee_started": "{org} gostaria de enviar mensagens para você. Responda "
                                                    "{yes_word} para aceitar ou {stop_word} para cancelar. Podem "
                                                    "ser cobradas tarifas de mensagens e dados.",
        "customer/opt_in_confirmation": "{sender}: inscrição confirmada. Podem ser cobradas tarifas de mensagens "
                                        "e dados. Responda {help_word} para ajuda, {stop_word} para cancelar.",
        "customer/reauth_request": "{org}: responda {yes_word} para continuar recebendo nossas mensagens ou "
                                   "{stop_word} para cancelar.",
        "customer/pin": "{org}: seu código é {pin}.{valid_line}",
        "customer/disclaimer": "Esta mensagem é de {org}, uma empresa. Responda {stop_word} para cancelar.",
        "email/marketing_footer": "Você recebe este e-mail de {org}.\nCancelar inscrição: {unsubscribe_url}",
        "help_line": " Ajuda: {}.", "valid_line": " Ele vale por {} minutos.", "sender": "Este remetente",
        "pin": "(indisponível)", "unsubscribe_url": "(responda STOP)",
    },
})
_SAME_BUILT_IN = {"customer/opt_in_request.customer_started": "customer/opt_in_request.employee_started",
                  "customer/opt_in_confirmation.customer_started": "customer/opt_in_confirmation",
                  "customer/opt_out_confirmation.customer_started": "customer/opt_out_confirmation"}


def built_in_text(name: str, language: str, variables: Mapping[str, object]) -> tuple[str, str]:
    """The last-resort text of `name` in `language` and the language it is in: the customer's
    templates have one in every supported language, the employee's notes in English only."""
    phrases = _TRANSLATED_BUILT_INS.get(language)
    form = phrases.get(_SAME_BUILT_IN.get(name, name)) if phrases is not None else None
    if phrases is None or form is None:
        return BUILT_IN_TEXTS[name](variables), DEFAULT_LANGUAGE
    v = variables
    sender = _text_of(v, "program_name", _text_of(v, "org_name", phrases["sender"]))
    org = _text_of(v, "org_name", _text_of(v, "program_name", phrases["sender"]))
    contact = _text_of(v, "help_contact", "")
    minutes = _text_of(v, "pin_valid_minutes", "")
    return form.format(
        sender=sender, org=org,
        help_line=phrases["help_line"].format(contact) if contact else "",
        valid_line=phrases["valid_line"].format(minutes) if minutes else "",
        start_word=_text_of(v, "start_word", "START"), stop_word=_text_of(v, "stop_word", "STOP"),
        help_word=_text_of(v, "help_word", "HELP"), yes_word=_text_of(v, "yes_word", YES_WORDS[language]),
        pin=_text_of(v, "pin", phrases["pin"]),
        unsubscribe_url=_text_of(v, "unsubscribe_url", phrases["unsubscribe_url"]),
    ), language


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error on line {exc.lineno}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


# Values that are about a person (or open a door) and must not reach the log.
_PERSONAL_VARIABLES = ("contact_name", "employee_name", "pin", "held_message", "reason", "unsubscribe_url")


def _redacted(message: str, variables: Mapping[str, object]) -> str:
    """An error message fit for the log: personal values (a name, a PIN) replaced by their
    variable's name, since some exceptions quote the value they choked on."""
    personal = [(key, str(variables[key])) for key in _PERSONAL_VARIABLES if key in variables]
    for key, text in sorted(personal, key=lambda item: -len(item[1])):
        if len(text) >= 2:
            message = message.replace(text, f"<{key}>")
    return message[:300]


class TemplateRenderer:
    def __init__(
        self,
        template_dir: Path | None = None,
        *,
        override_cache_size: int = DEFAULT_OVERRIDE_CACHE_SIZE,
        limits: TemplateLimits | None = None,
    ) -> None:
        self._template_dir = template_dir if template_dir is not None else default_template_dir()
        if not self._template_dir.is_dir():
            # Fail at startup, not at the first message: without the defaults every opt-in would fail.
            raise FileNotFoundError(
                f"message templates not found in {self._template_dir} (set {TEMPLATE_DIR_ENV})"
            )
        self._override_cache_size = override_cache_size
        self._limits = limits or TemplateLimits()
        self._env = MeteredSandbox(
            self._limits,
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._lock = threading.Lock()
        # (name, language) -> compiled packaged template, why it does not compile, or None when
        # the template has no file in that language (it is not translated: English is used)
        self._defaults: dict[tuple[str, str], Template | _Failure | None] = {}
        # (name, override source) -> compiled template, or why it does not compile; least recent first
        self._overrides: OrderedDict[tuple[str, str], Template | _Failure] = OrderedDict()
        # (name, override source) that passed check_override, least recent first
        self._checked: OrderedDict[tuple[str, str], None] = OrderedDict()
        # packaged template -> the variables its text depends on (None: not remembered, see _memo_key)
        self._reads: dict[Template, tuple[str, ...] | None] = {}
        # (packaged template, its variables' values) -> its text; least recent first
        self._texts: OrderedDict[tuple[object, ...], str] = OrderedDict()

    @property
    def template_dir(self) -> Path:
        return self._template_dir

    @property
    def limits(self) -> TemplateLimits:
        return self._limits

    def render(self, name: str, variables: Mapping[str, object], override: str | None = None,
               language: str = DEFAULT_LANGUAGE) -> Rendered:
        """Render `name` with `variables`, using the org's `override` source (written in
        `language`) when it works, else the packaged template in `language` (in English when the
        template has no file in that language), else the built-in text (in `language` for the
        customer's templates, `built_in_text`). Never raises
        for a known name (an unknown name or language is a caller bug: InvalidInput). Bounded:
        see `TemplateLimits`."""
        _require_known(name)
        _require_language(language)
        first: str | None = None  # what was wrong with the override
        reason: str | None = None
        if override is not None:
            text, failure = self._attempt(self._override(name, override), variables)
            if failure is None:
                return Rendered(text=text, name=name, source=TextSource.OVERRIDE, language=language)
            first, reason = self._fell_back(name, failure, TextSource.PACKAGED, variables), failure.reason

        packaged, packaged_language = self._default(name, language), language
        if packaged is None:  # not translated
            packaged, packaged_language = self._default(name, DEFAULT_LANGUAGE), DEFAULT_LANGUAGE
        assert packaged is not None  # every template has its English file, or a _Failure saying why not
        memo = self._memo_key(packaged, variables)
        with self._lock:
            remembered = self._texts.get(memo) if memo is not None else None
        if remembered is not None:
            text, failure = remembered, None
        else:
            text, failure = self._attempt(packaged, variables)
            if memo is not None and failure is None:
                with self._lock:
                    self._texts[memo] = text
                    while len(self._texts) > PACKAGED_TEXTS_REMEMBERED:
                        self._texts.popitem(last=False)
        if failure is None:
            error = None if first is None else f"override: {first}"
            return Rendered(text=text, name=name, source=TextSource.PACKAGED, error=error, reason=reason,
                            language=packaged_language)

        problems = f"packaged: {self._fell_back(name, failure, TextSource.BUILT_IN, variables)}"
        if first is not None:
            problems = f"override: {first}; {problems}"
        text, in_language = built_in_text(name, language, variables)
        return Rendered(text=text, name=name, source=TextSource.BUILT_IN,
                        error=problems, reason=reason or failure.reason, language=in_language)

    def check_override(self, name: str, source: str) -> str | None:
        """Validate an org's template before it is saved: None when it is fine, else what is wrong.

        Catches syntax errors, variables the template does not have, anything that fails when
        rendered with sample values (sandbox violations, type errors, an empty result), and a
        template over the limits with typical or with long values. Bounded like `render`; a
        template that passed is remembered, so checking it again costs a dictionary look-up.
        """
        _require_known(name)
        key = (name, source)
        with self._lock:
            if key in self._checked:
                self._checked.move_to_end(key)
                return None
        if len(source) > self._limits.max_source_chars:
            return f"the template is longer than {self._limits.max_source_chars} characters"
        try:
            tree = self._env.parse(source)
        except TemplateSyntaxError as exc:
            return _describe(exc)
        allowed = TEMPLATE_VARIABLES[name]
        unknown = meta.find_undeclared_variables(tree) - allowed
        if unknown:
            first = min((n for n in tree.find_all(nodes.Name) if n.name in unknown), key=lambda n: n.lineno)
            return (
                f"unknown variable '{first.name}' on line {first.lineno}; "
                f"{name} can use: {', '.join(sorted(allowed))}"
            )
        compiled = self._override(name, source)
        if isinstance(compiled, _Failure):
            return compiled.message
        samples = {key: _SAMPLE_VALUES[key] for key in allowed}
        empties = {**samples, **{key: "" for key in _OPTIONAL_VARIABLES if key in allowed}}
        longest = {key: _LONG_SAMPLE_VALUES[key] for key in allowed}
        for trial, values in (("", samples), ("", empties), (_LONG_TRIAL, longest)):
            _, failure = self._attempt(compiled, values)
            if failure is not None:
                over = "over the template limits" if failure.reason == "limit" else ""
                where = ", ".join(part for part in (over, trial) if part)
                return f"{where}: {failure.message}" if where else failure.message
        with self._lock:
            self._checked[key] = None
            while len(self._checked) > self._override_cache_size:
                self._checked.popitem(last=False)
        return None

    def _fell_back(self, name: str, failure: _Failure, to: TextSource, variables: Mapping[str, object]) -> str:
        """Count and log a fallback; returns what failed, without personal values."""
        template_fallback_counter().labels(name, failure.reason, to.value).inc()
        message = _redacted(failure.message, variables)
        what = "override of" if to is TextSource.PACKAGED else "packaged template"
        level = logging.ERROR if to is TextSource.PACKAGED else logging.CRITICAL
        _log.log(level, "%s %s failed (%s), using the %s text: %s", what, name, failure.reason, to.value, message)
        return message

    def _attempt(self, template: Template | _Failure, variables: Mapping[str, object]) -> tuple[str, _Failure | None]:
        """Render within the limits, turning any failure (or an empty message) into a `_Failure`."""
        if isinstance(template, _Failure):
            return "", template
        try:
            text = self._run(template, variables)
        except TemplateLimitExceeded as exc:
            return "", _Failure("limit", str(exc))
        except RecursionError:
            return "", _Failure("limit", "macros or loops nested too deeply")
        except Exception as exc:
            return "", _Failure("error", _describe(exc))
        if not text:
            return "", _Failure("error", "renders to an empty message")
        return text, None

    def _run(self, template: Template, variables: Mapping[str, object]) -> str:
        budget = Budget(self._limits, sum(len(v) if type(v) is str else size_of(v) for v in variables.values()))
        chunks: list[str] = []
        length = 0
        # Output is checked chunk by chunk, so a template that writes too much stops there. Time
        # needs no check here: whatever runs long goes through loops or calls, which take steps.
        with metered(budget):
            stream = template.generate(variables)  # a generator: closed below if cut short
            try:
                for chunk in stream:
                    length += len(chunk)
                    if length > budget.max_chars:
                        budget.check_chars(length, "the message")
                    chunks.append(chunk)
            finally:
                stream.close()  # type: ignore[attr-defined]
        return "".join(chunks).strip()

    def _memo_key(self, template: Template | _Failure, variables: Mapping[str, object]) -> tuple[object, ...] | None:
        """What a packaged template's text is remembered by: the template and the values of the
        variables it reads, when they are all plain values (most customer texts read only the
        org's: one render serves every customer). None: render it."""
        if isinstance(template, _Failure):
            return None
        names = self._reads.get(template)
        if names is None:
            return None
        values = tuple(variables.get(name, _MISSING) for name in names)
        if not all(type(value) in _PLAIN for value in values):
            return None
        return template, values

    def _default(self, name: str, language: str) -> Template | _Failure | None:
        """The packaged template of `name` in `language`, compiled at its first use; None when it
        has no file in that language other than English (a missing English file is a failure)."""
        key = (name, language)
        if key in self._defaults:
            return self._defaults[key]
        path = self._template_dir / packaged_file_name(name, language)
        template: Template | _Failure | None
        if language != DEFAULT_LANGUAGE and not path.exists():
            template = None
        else:
            try:
                source = path.read_text(encoding="utf-8")
                template = self._compile(source, name)
                self._reads[template] = _variables_read(self._env.parse(source))
            except TemplateLimitExceeded as exc:
                template = _Failure("limit", str(exc))
            except Exception as exc:  # missing or unreadable file, syntax error
                template = _Failure("error", _describe(exc))
        with self._lock:
            self._defaults[key] = template
        return template

    def _override(self, name: str, source: str) -> Template | _Failure:
        key = (name, source)
        with self._lock:
            cached = self._overrides.get(key)
            if cached is not None:
                self._overrides.move_to_end(key)
                return cached
        compiled: Template | _Failure
        try:
            compiled = self._compile(source, f"override of {name}")
        except TemplateLimitExceeded as exc:
            compiled = _Failure("limit", str(exc))
        except RecursionError:
            compiled = _Failure("limit", "expressions nested too deeply")
        except Exception as exc:
            compiled = _Failure("error", _describe(exc))
        with self._lock:
            self._overrides[key] = compiled
            while len(self._overrides) > self._override_cache_size:
                self._overrides.popitem(last=False)
        return compiled

    def _compile(self, source: str, name: str) -> Template:
        code = self._env.compile_metered(source, name)
        return self._env.template_class.from_code(self._env, code, self._env.make_globals(None))


# How many packaged texts a renderer remembers (`TemplateRenderer._memo_key`).
PACKAGED_TEXTS_REMEMBERED = 2048
_MISSING = object()
_PLAIN = frozenset({str, int, float, bool, type(None), type(_MISSING)})
# Filters and globals whose output is not decided by the variables alone.
_CHANCE_FILTERS = frozenset({"random", "shuffle"})
_CHANCE_GLOBALS = frozenset({"lipsum", "cycler", "joiner", "namespace"})


# Values about one customer: a text that reads one is rather rendered every time than kept in
# memory (a PIN above all), and would rarely be asked for again anyway.
_CUSTOMERS_OWN = frozenset({"contact_name", "pin", "held_message", "reason", "unsubscribe_url"})


def _variables_read(tree: nodes.Template) -> tuple[str, ...] | None:
    """The variables a template's text is decided by, or None if it is not to be remembered:
    chance also decides it (a `random` filter), it keeps state of its own, or it reads a
    customer's own values."""
    if any(node.name in _CHANCE_FILTERS for node in tree.find_all(nodes.Filter)):
        return None
    if any(node.name in _CHANCE_GLOBALS for node in tree.find_all(nodes.Name)):
        return None
    read = meta.find_undeclared_variables(tree)
    return None if read & _CUSTOMERS_OWN else tuple(sorted(read))


def _require_known(name: str) -> None:
    if name not in TEMPLATE_VARIABLES:
        raise InvalidInput(f"unknown message template {name!r}", code="unknown_template")


def _require_language(language: str) -> None:
    if language not in SUPPORTED_LANGUAGES:
        raise InvalidInput(f"unknown language {language!r}: use one of {', '.join(SUPPORTED_LANGUAGES)}",
                           code="unknown_language")
