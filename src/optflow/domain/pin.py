"""One-time PINs: the customer reads the code to the agent, the agent types it in.

Pure: the random digits and `now` come from the caller. Only a salted hash is stored.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta

from .model import Consent, DomainError, InvalidInput

PIN_LENGTH = 6


class PinRejected(DomainError):
    code = "pin_rejected"


def pin_hash(consent_key: str, pin: str) -> str:
    return hashlib.sha256(f"{consent_key}:{pin}".encode()).hexdigest()


def consent_key(consent: Consent) -> str:
    return f"{consent.org_id}:{consent.address}:{consent.channel.value}"


def issue(consent: Consent, digits: str, now: datetime, ttl: timedelta) -> None:
    """Arm `consent` with a new PIN made of `digits` (from a CSPRNG, supplied by the caller)."""
    if len(digits) != PIN_LENGTH or not digits.isdigit():
        raise InvalidInput(f"a PIN is {PIN_LENGTH} digits")
    consent.pin_hash = pin_hash(consent_key(consent), digits)
    consent.pin_expires_at = now + ttl
    consent.pin_attempts = 0


def check(consent: Consent, typed: str, now: datetime, max_attempts: int) -> None:
    """Raise `PinRejected` saying why unless `typed` is the armed, unexpired PIN.

    A wrong code counts against `max_attempts`; once they are used up the PIN is void and the
    customer must reply YES again for a new one.
    """
    code = "".join(ch for ch in (typed or "") if ch.isdigit())
    if not consent.awaiting_pin or not consent.pin_hash:
        raise PinRejected("no PIN is awaited for this address", code="no_pin_awaited")
    if consent.pin_attempts >= max_attempts:
        raise PinRejected(
            "too many wrong codes: ask the customer to reply YES for a new PIN", code="pin_locked"
        )
    if consent.pin_expires_at is None or now > consent.pin_expires_at:
        raise PinRejected("the PIN has expired: ask the customer to reply YES for a new one", code="pin_expired")
    if not hmac.compare_digest(pin_hash(consent_key(consent), code), consent.pin_hash):
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
