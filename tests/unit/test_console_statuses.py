"""The conversation's status words: a deferred message (only while its time is ahead), a
provider's delivery report (undelivered, with the error code and what it means for the address)
and a dialler's call (dialled, with its outcome)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from optflow.domain.delivery import error_meaning
from optflow.domain.model import Channel, Purpose
from optflow.domain.policy import MessageKind
from optflow.domain.records import Audience, Direction, Message, MessageStatus
from optflow.entrypoints.console.views_conversation import status_reason

NOW = datetime(2026, 11, 2, 14, 30, tzinfo=UTC)
SENT = Message(
    id=1, org_id=1, contact_id=1, direction=Direction.OUT, audience=Audience.CUSTOMER, channel=Channel.TEXT,
    address="+14155552671", org_address="+12025550123", body="Your car is ready", subject=None,
    purpose=Purpose.TRANSACTIONAL, kind=MessageKind.NORMAL, status=MessageStatus.SENT, intent=None,
    provider_id="SM1", reply_text=None, agent_id=None, enrollment_id=None, not_before=None, claim_token=None,
    attempts=1, last_error=None, created_at=NOW, sent_at=NOW, provider_status="sent", error_code=None,
    template_json=None)


def test_an_undelivered_text_shows_the_providers_error_and_what_it_means() -> None:
    undelivered = replace(SENT, status=MessageStatus.UNDELIVERED, provider_status="undelivered", error_code="30005",
                          last_error="undelivered (error 30005)")
    assert status_reason(undelivered, NOW) == ("undelivered: undelivered (error 30005); "
                                          "the number is unknown or not in service (Twilio 30005)")


def test_a_delivery_report_without_an_error_is_just_its_status() -> None:
    undelivered = replace(SENT, status=MessageStatus.UNDELIVERED, provider_status="undelivered")
    assert status_reason(undelivered, NOW) == "undelivered"
    delivered = replace(SENT, status=MessageStatus.DELIVERED, provider_status="delivered")
    assert status_reason(delivered, NOW) == "delivered"


def test_an_error_code_the_address_means_nothing_for_is_shown_as_it_came() -> None:
    failed = replace(SENT, status=MessageStatus.DELIVERED, error_code="30007")
    assert status_reason(failed, NOW) == "delivered (error 30007)"


def test_a_dialled_call_shows_the_diallers_outcome() -> None:
    call = replace(SENT, channel=Channel.CALL, status=MessageStatus.DIALLED, provider_status="no_answer")
    assert status_reason(call, NOW) == "dialled: no answer"
    assert status_reason(replace(call, provider_status=None), NOW) == "dialled"


def test_a_queued_message_is_deferred_only_while_its_time_is_ahead() -> None:
    queued = replace(SENT, status=MessageStatus.QUEUED, provider_status=None, not_before=NOW + timedelta(hours=5))
    assert status_reason(queued, NOW) == "deferred until 2026-11-02 19:30 UTC"
    released = replace(queued, not_before=NOW - timedelta(minutes=1), created_at=NOW - timedelta(hours=1))
    assert status_reason(released, NOW) == "queued"  # a held message released at the YES


@pytest.mark.parametrize(("code", "words"), [
    ("21610", "the recipient opted out with the provider (Twilio 21610)"),
    ("30004", "the carrier blocks messages to this number (Twilio 30004)"),
    ("30006", "the number is a landline or cannot receive texts (Twilio 30006)"),
    ("30007", None), (None, None),
])
def test_error_meaning_is_the_domains_words_for_the_code(code: str | None, words: str | None) -> None:
    assert error_meaning(code) == words
