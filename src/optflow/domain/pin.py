"""One-time PINs: the customer reads the code to the agent, the agent types it in.

Pure: the random digits, `now` and the key come from the caller. Only a keyed hash is stored:
HMAC-SHA256 under a key kept outside the database (`adapters.secrets`). A 6-digit code has only
a million values, so any unkeyed hash, salted or slow, is reversed by trying them all; without
the key a leaked database gives nothing to try them against.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from .model import Consent, DomainError, InvalidInput

PIN_LENGTH = 6


class PinRejected(DomainError):
    code = "pin_rejected"


HASH_SCHEME = "hmac-sha256:"


def pin_hash(key: bytes, consent_key: str, pin: str) -> str:
    digest = hmac.new(key, f"{consent_key}:{pin}".encode(), hashlib.sha256).hexdigest()
    return HASH_SCHEME + digest


def consent_key(consent: Consent) -> str:
    return f"{consent.org_id}:{consent.address}:{consent.channel.value}"


def issue(consent: Consent, digits: str, now: datetime, ttl: timedelta, key: bytes) -> None:
    """Arm `consent` with a new PIN made of `digits` (from a CSPRNG, supplied by the caller),
    stored as its hash under `key`."""
    if len(digits) != PIN_LENGTH or not digits.isdigit():
        raise InvalidInput(f"a PIN is {PIN_LENGTH} digits")
    if not key:
        raise ValueError("a PIN needs a key to hash it with")
    consent.pin_hash = pin_hash(key, consent_key(consent), digits)
    consent.pin_expires_at = now + ttl
    consent.pin_attempts = 0


def check(consent: Consent, typed: str, now: datetime, max_attempts: int, key: bytes) -> None:
    """Raise `PinRejected` saying why unless `typed` is the armed, unexpired PIN.

    A wrong code counts against `max_attempts`; once they are used up the PIN is void and the
    customer must reply YES again for a new one. A PIN stored by an older version as an unkeyed
    hash counts as expired: it lived for minutes, and a new one is a YES away.
    """
    code = "".join(ch for ch in (typed or "") if ch.isdigit())
    if not consent.awaiting_pin or not consent.pin_hash:
        raise PinRejected("no PIN is awaited for this address", code="no_pin_awaited")
    if consent.pin_attempts >= max_attempts:
        raise PinRejected(
            "too many wrong codes: ask the customer to reply YES for a new PIN", code="pin_locked"
        )
    if consent.pin_expires_at is None or now > consent.pin_expires_at or not consent.pin_hash.startswith(HASH_SCHEME):
        raise PinRejected("the PIN has expired: ask the customer to reply YES for a new one", code="pin_expired")
    if not hmac.compare_digest(pin_hash(key, consent_key(consent), code), consent.pin_hash):
        consent.pin_attempts += 1
        left = max_attempts - consent.pin_attempts
        raise PinRejected(
            f"wrong code; {left} attempt{'s' if left != 1 else ''} left" if left else
            "wrong code; no attempts left: ask the customer to reply YES for a new PIN",
            code="pin_wrong",
        )
    consent.pin_hash = None
    consent.pin_expires_at = None
    consent.pin_attempts = 0
