"""The org settings form: settings shown as form fields, and a submitted form turned back into
setting values. Only the translation lives here; whether the values are allowed is decided by
`service_layer.admin.update_settings` (the same checks as `PATCH /api/v1/settings`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ...domain.model import Channel, Purpose
from ...domain.settings import OrgSettings

TEXT_FIELDS = ("program_name", "help_contact", "message_frequency")
PRESETS = ("none", "debt_collection")


def keywords_text(keywords: Mapping[str, Mapping[str, list[str]]]) -> str:
    """`es opt_out: basta, alto` lines, one per language and intent."""
    return "\n".join(f"{language} {intent}: {', '.join(words)}"
                     for language, by_intent in sorted(keywords.items())
                     for intent, words in sorted(by_intent.items()))


def parse_keywords(text: str) -> tuple[dict[str, dict[str, list[str]]], list[str]]:
    """Lines `LANGUAGE INTENT: word, other phrase` back into the settings' mapping; the lines
    that are not of that shape, as problems."""
    keywords: dict[str, dict[str, list[str]]] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        head, colon, words = line.partition(":")
        parts = head.split()
        if not colon or len(parts) != 2:
            problems.append(f"line {number}: write it as 'LANGUAGE INTENT: word, other phrase' "
                            "(e.g. 'es opt_out: basta, alto')")
            continue
        listed = [word.strip() for word in words.split(",") if word.strip()]
        keywords.setdefault(parts[0], {}).setdefault(parts[1], []).extend(listed)
    return keywords, problems


def form_values(settings: OrgSettings) -> dict[str, Any]:
    """What each field shows for the resolved `settings`."""
    values: dict[str, Any] = {name: getattr(settings, name) for name in TEXT_FIELDS}
    values.update(
        pin_required=settings.pin_required, pin_ttl_minutes=settings.pin_ttl_minutes,
        pin_max_attempts=settings.pin_max_attempts,
        stop_applies_to_all_channels=settings.stop_applies_to_all_channels,
        consent_methods="\n".join(settings.consent_methods), keywords=keywords_text(settings.keywords),
        request_lapse_days=settings.request_lapse_days, quiet_hours=settings.quiet_hours,
        preset=settings.preset,
    )
    for channel in Channel:
        values[f"mode_{channel.value}"] = settings.mode(channel).value
        values[f"group_{channel.value}"] = settings.group_messaging.get(channel, False)
        days = settings.reauth_days.get(channel)
        values[f"reauth_{channel.value}"] = "" if days is None else str(days)
    for purpose in Purpose:
        values[f"quiet_{purpose.value}"] = purpose in settings.quiet_hours_purposes
    return values


def _number(raw: str, field: str, problems: dict[str, list[str]]) -> int | None:
    raw = raw.strip()
    if raw.isdigit() and len(raw) < 9:
        return int(raw)
    problems.setdefault(field, []).append(f"{raw!r} is not a whole number" if raw else "a number is needed")
    return None


def changes_from_form(get: Callable[[str], str], current: OrgSettings) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The settings the submitted form changes (only those that differ from `current`, so a
    sub-org keeps inheriting what it did not touch), and the fields that could not be read."""
    problems: dict[str, list[str]] = {}
    wanted: dict[str, Any] = {name: get(name).strip() for name in TEXT_FIELDS}
    wanted["modes"] = {ch.value: get(f"mode_{ch.value}") or current.mode(ch).value for ch in Channel}
    wanted["group_messaging"] = {ch.value: get(f"group_{ch.value}") == "on" for ch in Channel}
    wanted["pin_required"] = get("pin_required") == "on"
    wanted["stop_applies_to_all_channels"] = get("stop_applies_to_all_channels") == "on"
    wanted["quiet_hours"] = get("quiet_hours") == "on"
    wanted["quiet_hours_purposes"] = [p.value for p in Purpose if get(f"quiet_{p.value}") == "on"]
    wanted["consent_methods"] = [line.strip() for line in get("consent_methods").splitlines() if line.strip()]
    wanted["preset"] = get("preset")
    for name in ("pin_ttl_minutes", "pin_max_attempts", "request_lapse_days"):
        value = _number(get(name), name, problems)
        if value is not None:
            wanted[name] = value
    reauth: dict[str, int] = {}
    for channel in Channel:
        raw = get(f"reauth_{channel.value}").strip()
        if raw:
            days = _number(raw, "reauth_days", problems)
            if days is not None:
                reauth[channel.value] = days
    wanted["reauth_days"] = reauth
    keywords, keyword_problems = parse_keywords(get("keywords"))
    if keyword_problems:
        problems["keywords"] = keyword_problems
    else:
        wanted["keywords"] = keywords
    now = current.model_dump(mode="json")
    now["modes"] = {ch.value: current.mode(ch).value for ch in Channel}
    now["group_messaging"] = {ch.value: current.group_messaging.get(ch, False) for ch in Channel}
    changes = {key: value for key, value in wanted.items() if now.get(key) != value}
    return changes, problems
