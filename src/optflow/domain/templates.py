"""The messages optflow writes itself, by template name: each is a packaged Jinja file under
message_templates/ (the customer's ones in every supported language), may be overridden per org
and language, and has a built-in last-resort text (adapters/templates.py)."""

from __future__ import annotations

from collections.abc import Mapping

from .languages import DEFAULT_LANGUAGE, SUPPORTED_LANGUAGES

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
    # A conversation the customer started (Movius's "MT" case) has texts of its own.
    "customer/opt_in_confirmation.customer_started",
    "customer/opt_out_confirmation.customer_started",
    "employee/opt_in_request_sent.customer_started",
    "employee/contact_opted_in.customer_started",
    "employee/contact_opted_out.customer_started",
)

CUSTOMER_TEMPLATE_NAMES: tuple[str, ...] = tuple(
    name for name in TEMPLATE_NAMES if not name.startswith("employee/")
)
"""The templates a customer reads: each is packaged in every supported language. The notes to
employees are in English only."""

_LANGUAGE_SEPARATOR = "."


def packaged_file_name(name: str, language: str) -> str:
    """The file of a packaged template, relative to the template directory: `<name>.j2` in
    English, `<name>.<language>.j2` in another language ("customer/help.es.j2")."""
    return f"{name}.j2" if language == DEFAULT_LANGUAGE else f"{name}{_LANGUAGE_SEPARATOR}{language}.j2"


def override_key(name: str, language: str | None) -> str:
    """The key of an org's override in its `templates` setting: the template's name for the org's
    default language, `<name>.<language>` for another one ("customer/help.es")."""
    return name if language is None else f"{name}{_LANGUAGE_SEPARATOR}{language}"


def parse_override_key(key: str) -> tuple[str, str | None]:
    """(template name, language or None) of a `templates` key: "customer/help.es" ->
    ("customer/help", "es"); "customer/help" -> ("customer/help", None), the org's default
    language. A key whose last part is no supported language is returned whole (and refused
    later as an unknown template)."""
    name, separator, suffix = key.rpartition(_LANGUAGE_SEPARATOR)
    if separator and suffix in SUPPORTED_LANGUAGES and name in TEMPLATE_NAMES:
        return name, suffix
    return key, None


def override_for(templates: Mapping[str, str], name: str, language: str, default_language: str) -> str | None:
    """The org's override of `name` for a text in `language`: the one written for that language
    (`<name>.<language>`), or, when `language` is the org's default language, the plain `<name>`.

    An override in another language is not used for `language`: the packaged template in the
    customer's language is better than the org's text in a language the customer did not use."""
    own = templates.get(override_key(name, language))
    if own is None and language == default_language:
        own = templates.get(name)
    return own
