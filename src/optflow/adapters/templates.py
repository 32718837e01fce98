"""Render the messages sent on consent changes from Jinja templates.

The packaged defaults live in `message_templates/<name>.j2`; an org may override any of them with
its own source text. Org text is untrusted, so everything runs in Jinja's sandbox with
`StrictUndefined`, and a broken override never stops a message: the packaged default is used
instead and the problem is logged (see docs/templates.md for the full fallback rule).

Compiling a template costs about 60 times as much as rendering it, so every template is compiled
once: a default at its first use, an override once per distinct source text (in a bounded LRU).
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import ImmutableSandboxedEnvironment

from optflow.domain.model import InvalidInput

TEMPLATE_NAMES: tuple[str, ...] = (
    "customer/opt_in_request.employee_started",
    "customer/opt_in_request.customer_started",
    "customer/opt_in_confirmation",
    "customer/opt_out_confirmation",
    "customer/help",
    "customer/reauth_request",
    "customer/pin",
    "customer/disclaimer",
    "employee/opt_in_request_sent",
    "employee/contact_opted_in",
    "employee/contact_opted_out",
    "employee/pin_sent",
    "email/marketing_footer",
)

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


@dataclass(frozen=True)
class Rendered:
    text: str
    name: str
    used_fallback: bool  # True when an org override (or the default itself) failed and a fallback was used
    error: str | None  # what was wrong, if anything


class DefaultTemplateError(RuntimeError):
    """A packaged default template is missing or broken and the message has no last-resort text.

    Only raised for templates outside `_LAST_RESORT`; callers must not let it undo the consent
    change that asked for the message (skip the message, keep the change).
    """


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


def _text_of(variables: Mapping[str, object], key: str, default: str) -> str:
    """A variable as text for a last-resort message, which must not fail whatever it is given."""
    try:
        value = str(variables.get(key) or "").strip()
    except Exception:
        return default
    return value or default


def _opt_out_last_resort(variables: Mapping[str, object]) -> str:
    sender = _text_of(variables, "program_name", _text_of(variables, "org_name", "This sender"))
    start = _text_of(variables, "start_word", "START")
    return f"{sender}: you are unsubscribed and will get no more messages. Reply {start} to resubscribe."


def _help_last_resort(variables: Mapping[str, object]) -> str:
    sender = _text_of(variables, "program_name", _text_of(variables, "org_name", "This sender"))
    contact = _text_of(variables, "help_contact", "")
    stop = _text_of(variables, "stop_word", "STOP")
    reach = f" For help, contact {contact}." if contact else ""
    return f"{sender}:{reach} Msg & data rates may apply. Reply {stop} to opt out."


# Replies carriers require whatever happens: if even the packaged default fails, these plain
# Python texts are sent instead, so a STOP or HELP is always answered.
_LAST_RESORT = {
    "customer/opt_out_confirmation": _opt_out_last_resort,
    "customer/help": _help_last_resort,
}


def _describe(exc: Exception) -> str:
    if isinstance(exc, TemplateSyntaxError):
        return f"syntax error on line {exc.lineno}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class TemplateRenderer:
    def __init__(
        self,
        template_dir: Path | None = None,
        *,
        override_cache_size: int = DEFAULT_OVERRIDE_CACHE_SIZE,
    ) -> None:
        self._template_dir = template_dir if template_dir is not None else default_template_dir()
        if not self._template_dir.is_dir():
            # Fail at startup, not at the first message: without the defaults every opt-in would fail.
            raise FileNotFoundError(
                f"message templates not found in {self._template_dir} (set {TEMPLATE_DIR_ENV})"
            )
        self._override_cache_size = override_cache_size
        self._env = ImmutableSandboxedEnvironment(
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            auto_reload=False,
        )
        self._lock = threading.Lock()
        self._defaults: dict[str, Template] = {}
        # (name, override source) -> compiled template, or why it does not compile; least recent first
        self._overrides: OrderedDict[tuple[str, str], Template | str] = OrderedDict()

    @property
    def template_dir(self) -> Path:
        return self._template_dir

    def render(self, name: str, variables: Mapping[str, object], override: str | None = None) -> Rendered:
        """Render `name` with `variables`, using the org's `override` source when it works.

        Raises InvalidInput for an unknown name, and DefaultTemplateError when the packaged
        default is needed, fails, and `name` has no last-resort text.
        """
        _require_known(name)
        override_error: str | None = None
        if override is not None:
            compiled = self._override(name, override)
            if isinstance(compiled, str):
                override_error = compiled
            else:
                text, override_error = self._run(compiled, variables)
                if override_error is None:
                    return Rendered(text=text, name=name, used_fallback=False, error=None)
            _log.error("override of %s failed, using the default: %s", name, override_error)

        try:
            text, default_error = self._run(self._default(name), variables)
        except Exception as exc:  # missing or unreadable file, syntax error in the default
            default_error = _describe(exc)
        if default_error is None:
            return Rendered(
                text=text, name=name, used_fallback=override_error is not None, error=override_error
            )

        problems = f"default: {default_error}"
        if override_error is not None:
            problems = f"override: {override_error}; {problems}"
        last_resort = _LAST_RESORT.get(name)
        if last_resort is None:
            _log.error("default template %s failed: %s", name, default_error)
            raise DefaultTemplateError(f"template {name} cannot be rendered: {problems}")
        _log.critical("default template %s failed, sending the built-in text: %s", name, default_error)
        return Rendered(text=last_resort(variables), name=name, used_fallback=True, error=problems)

    def check_override(self, name: str, source: str) -> str | None:
        """Validate an org's template before it is saved: None when it is fine, else what is wrong.

        Catches syntax errors, variables the template does not have, and anything that fails when
        rendered with sample values (sandbox violations, type errors, an empty result).
        """
        _require_known(name)
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
        if isinstance(compiled, str):
            return compiled
        samples = {key: _SAMPLE_VALUES[key] for key in allowed}
        empties = {**samples, **{key: "" for key in _OPTIONAL_VARIABLES if key in allowed}}
        for trial in (samples, empties):
            _, error = self._run(compiled, trial)
            if error is not None:
                return error
        return None

    def _run(self, template: Template, variables: Mapping[str, object]) -> tuple[str, str | None]:
        """Render, turning any failure (or an empty message) into a description of it."""
        try:
            text = template.render(variables).strip()
        except Exception as exc:
            return "", _describe(exc)
        if not text:
            return "", "renders to an empty message"
        return text, None

    def _default(self, name: str) -> Template:
        template = self._defaults.get(name)
        if template is None:
            path = self._template_dir / f"{name}.j2"
            template = self._compile(path.read_text(encoding="utf-8"), name)
            with self._lock:
                self._defaults[name] = template
        return template

    def _override(self, name: str, source: str) -> Template | str:
        key = (name, source)
        with self._lock:
            cached = self._overrides.get(key)
            if cached is not None:
                self._overrides.move_to_end(key)
                return cached
        compiled: Template | str
        try:
            compiled = self._compile(source, f"override of {name}")
        except Exception as exc:
            compiled = _describe(exc)
        with self._lock:
            self._overrides[key] = compiled
            while len(self._overrides) > self._override_cache_size:
                self._overrides.popitem(last=False)
        return compiled

    def _compile(self, source: str, name: str) -> Template:
        code = self._env.compile(source, name=name)
        return self._env.template_class.from_code(self._env, code, self._env.make_globals(None))


def _require_known(name: str) -> None:
    if name not in TEMPLATE_VARIABLES:
        raise InvalidInput(f"unknown message template {name!r}", code="unknown_template")
