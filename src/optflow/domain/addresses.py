"""Normalising the addresses customers are reached at: phone numbers to E.164, emails to one form."""

from __future__ import annotations

import functools
import re

import phonenumbers

from .model import Channel, InvalidInput

PHONE_CHANNELS = frozenset({Channel.TEXT, Channel.CALL, Channel.WHATSAPP})
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_WHATSAPP_PREFIX = "whatsapp:"
_E164 = re.compile(r"\+[1-9][0-9]{6,14}")


@functools.lru_cache(maxsize=1024)
def normalize_phone(raw: str, default_region: str = "US") -> str:
    """E.164 form of a valid number; `InvalidInput` naming the input otherwise.

    Parsing and validating costs ~30 µs and every inbound message does it for its sender and
    for the org's number, so recent answers are kept (a small, bounded cache: invalid input is
    never cached, it raises)."""
    text = (raw or "").strip()
    if text.lower().startswith(_WHATSAPP_PREFIX):
        text = text[len(_WHATSAPP_PREFIX):]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(f"{raw!r} is not a phone number ({exc})", code="invalid_phone") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidInput(f"{raw!r} is not a valid phone number", code="invalid_phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    text = (raw or "").strip()
    if not _EMAIL.match(text):
        raise InvalidInput(f"{raw!r} is not an email address", code="invalid_email")
    # Mailbox names are case-insensitive at every provider that matters; one form avoids two
    # consents for the same person.
    return text.lower()


def looks_like_email(raw: str) -> bool:
    return "@" in raw


def normalize(raw: str, default_region: str = "US") -> tuple[str, str]:
    """(kind, value) for a phone number or email address."""
    if looks_like_email(raw):
        return "email", normalize_email(raw)
    return "phone", normalize_phone(raw, default_region)


def normalize_for_channel(raw: str, channel: Channel, default_region: str = "US") -> str:
    if channel is Channel.EMAIL:
        return normalize_email(raw)
    if channel in PHONE_CHANNELS:
        return normalize_phone(raw, default_region)
    # chat: an opaque user id from the gateway, or a phone number
    text = (raw or "").strip()
    if not text:
        raise InvalidInput("an empty chat address", code="invalid_address")
    try:
        return normalize_phone(text, default_region)
    except InvalidInput:
        return text


def written_as_e164(raw: str, channel: Channel) -> str | None:
    """`raw` (without a `whatsapp:` prefix) when it is written exactly as optflow stores phone
    numbers, else None. Such a string still needs checking (`normalize_phone`) unless it is
    found among numbers already stored, which were checked when they were saved: that look-up
    costs less than parsing a number again (see `receive_inbound`)."""
    if channel is Channel.EMAIL:
        return None
    text = raw[len(_WHATSAPP_PREFIX):] if raw[:len(_WHATSAPP_PREFIX)].lower() == _WHATSAPP_PREFIX else raw
    return text if _E164.fullmatch(text) else None


def parse_channel(raw: str) -> Channel:
    try:
        return Channel((raw or "").strip().lower())
    except ValueError:
        raise InvalidInput(
            f"unknown channel {raw!r}: use one of " + ", ".join(c.value for c in Channel),
            code="unknown_channel",
        ) from None


def channels_for_kind(kind: str) -> tuple[Channel, ...]:
    if kind == "email":
        return (Channel.EMAIL,)
    return (Channel.TEXT, Channel.CALL, Channel.WHATSAPP)


@functools.lru_cache(maxsize=1024)
def country_of(address: str) -> str | None:
    """The country (ISO 3166 region code, "US", "MX") of a phone number in E.164 form, by its
    numbering plan; None for anything else (an email, a chat id) or a number of no one country
    (+1 numbers belong to the country of their area code: "CA" for 416, "US" for 415)."""
    if not _E164.fullmatch(address):
        return None
    try:
        region = phonenumbers.region_code_for_number(phonenumbers.parse(address, None))
    except phonenumbers.NumberParseException:
        return None
    return region if region and region != "001" else None


def is_country_code(code: str) -> bool:
    """Whether `code` is a country (region) code that phone numbers can belong to ("MX", "US")."""
    return code in phonenumbers.SUPPORTED_REGIONS
