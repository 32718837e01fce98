"""What providers' reports and error codes mean (domain/delivery.py)."""

from __future__ import annotations

import pytest

from optflow.domain.delivery import CarrierEffect, Undeliverable, carrier_effect, reported_status
from optflow.domain.records import MessageStatus as S


@pytest.mark.parametrize(("code", "effect"), [
    ("21610", CarrierEffect(opt_out=True)),
    ("30004", CarrierEffect(undeliverable=Undeliverable.CARRIER_BLOCKED)),
    ("30005", CarrierEffect(undeliverable=Undeliverable.UNKNOWN_NUMBER)),
    (" 30006 ", CarrierEffect(undeliverable=Undeliverable.NOT_TEXTABLE)),
    ("30003", CarrierEffect()), ("30007", CarrierEffect()), ("30008", CarrierEffect()), (None, CarrierEffect()),
])
def test_carrier_codes(code: str | None, effect: CarrierEffect) -> None:
    assert carrier_effect(code) == effect


@pytest.mark.parametrize(("current", "reported", "expected"), [
    (S.HANDED_OVER, "sent", S.SENT), (S.SENT, "delivered", S.DELIVERED), (S.SENT, "read", S.DELIVERED),
    (S.SENT, "undelivered", S.UNDELIVERED), (S.SENT, "FAILED", S.FAILED), (S.HANDED_OVER, "delivered", S.DELIVERED),
    (S.DELIVERED, "sent", None), (S.DELIVERED, "failed", None), (S.UNDELIVERED, "delivered", None),
    (S.SENT, "sent", None), (S.SENT, "queued", None), (S.SENT, "no-such-status", None),
    (S.QUEUED, "delivered", None), (S.CANCELLED, "delivered", None), (S.REPLIED, "delivered", None),
])
def test_reports_move_a_message_forward_only(current: S, reported: str, expected: S | None) -> None:
    assert reported_status(current, reported) == expected
