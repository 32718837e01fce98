"""What a log line may say about a person: phone numbers cut to their last digits, email
addresses to their first letter and domain, message bodies left out. Pure text functions, used by
the log processors (`entrypoints.logging_setup`) and by code that names an address in a log line.
"""

from __future__ import annotations

import re

# A number written with a leading + (E.164, possibly spaced or punctuated, possibly after
# `whatsapp:`), or a bare run of 10 to 15 digits (a national number); never digits inside a word,
# so message SIDs such as SM0123456789... and hex hashes are left alone.
_PHONE = re.compile(r"(?<![\w+])(?:\+\d[\d ().-]{5,20}\d|\d{10,15})(?![\w])")
_EMAIL = re.compile(r"(?<![\w.+-])([\w.+-])[\w.+-]*@((?:[\w-]+\.)+[\w-]+)", re.ASCII)
_MASK = "*"


def mask_phone(number: str) -> str:
    """`+14155552671` -> `+1******2671`: the country's first digit and the last four digits (two
    when the number is shorter than ten digits), every other digit a star."""
    digits = [ch for ch in number if ch.isdigit()]
    keep = 4 if len(digits) >= 10 else 2
    head = "+" + digits[0] if number.lstrip().startswith("+") else ""
    hidden = len(digits) - keep - (1 if head else 0)
    return head + _MASK * max(hidden, 0) + "".join(digits[-keep:])


def mask_email(address: str) -> str:
    """`sam@example.com` -> `s***@example.com`."""
    return _EMAIL.sub(lambda m: f"{m.group(1)}***@{m.group(2)}", address)


def mask_text(text: str) -> str:
    """`text` with every phone number and email address in it masked."""
    if not any(ch.isdigit() or ch == "@" for ch in text):
        return text
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), mask_email(text))


def mask_address(address: str | None) -> str:
    """An address of any channel for a log line: a phone number or email address masked as
    above; any other identifier (a chat user id) cut to its first and last two characters."""
    if not address:
        return ""
    masked = mask_text(address)
    if masked != address:
        return masked
    return address[:2] + "***" + address[-2:] if len(address) > 6 else "***"
