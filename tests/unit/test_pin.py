"""PINs are stored as HMAC-SHA256 under a key from outside the database (pure domain: the key is
passed in), and a hash in the old unkeyed format counts as expired."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from optflow.domain import pin as pins
from optflow.domain.model import Channel, Consent

NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
KEY = b"k" * 32
OTHER_KEY = b"o" * 32


def armed(digits: str = "123456", key: bytes = KEY) -> Consent:
    consent = Consent(channel=Channel.TEXT, address="+14155552671", org_id=1, awaiting_pin=True)
    pins.issue(consent, digits, NOW, timedelta(minutes=10), key)
    return consent


def test_the_stored_hash_is_keyed_and_not_the_unkeyed_hash_of_the_code() -> None:
    consent = armed()
    unkeyed = hashlib.sha256(f"{pins.consent_key(consent)}:123456".encode()).hexdigest()
    assert consent.pin_hash is not None and unkeyed not in consent.pin_hash
    assert consent.pin_hash != armed(key=OTHER_KEY).pin_hash
    assert "123456" not in consent.pin_hash


def test_a_leaked_hash_cannot_be_checked_without_the_key() -> None:
    consent = armed()
    with pytest.raises(pins.PinRejected) as wrong:
        pins.check(consent, "123456", NOW, 3, OTHER_KEY)
    assert wrong.value.code == "pin_wrong"
    pins.check(consent, "123456", NOW, 3, KEY)
    assert consent.pin_hash is None


def test_an_unkeyed_hash_from_before_the_upgrade_counts_as_expired() -> None:
    consent = armed()
    consent.pin_hash = hashlib.sha256(f"{pins.consent_key(consent)}:123456".encode()).hexdigest()
    with pytest.raises(pins.PinRejected) as old:
        pins.check(consent, "123456", NOW, 3, KEY)
    assert old.value.code == "pin_expired"


def test_issuing_without_a_key_is_refused() -> None:
    with pytest.raises(ValueError, match="key"):
        armed(key=b"")
