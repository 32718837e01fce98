"""Reading bounces and complaints: providers' JSON events and RFC 822 reports (domain/mail_feedback.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optflow.domain.commands import MailFeedback
from optflow.domain.mail_feedback import from_provider_json, from_report
from optflow.domain.model import InvalidInput

BOUNCES = Path(__file__).resolve().parents[1] / "fixtures" / "bounces"


def addresses(items: list[MailFeedback]) -> list[tuple[str, bool]]:
    return [(item.address, item.complaint) for item in items]


def test_the_generic_form() -> None:
    body = {"events": [{"type": "bounce", "email": "a@x.example", "reason": "550 no such user"},
                       {"type": "bounce", "email": "b@x.example", "permanent": False},
                       {"type": "complaint", "email": "c@x.example"}]}
    source, items = from_provider_json(json.dumps(body).encode())
    assert source == "generic" and addresses(items) == [("a@x.example", False), ("c@x.example", True)]
    assert items[0].evidence == "550 no such user"
    assert addresses(from_provider_json(b'{"type": "complaint", "email": "d@x.example"}')[1]) == [
        ("d@x.example", True)]


def test_sendgrid_events() -> None:
    body = [{"event": "bounce", "type": "bounce", "email": "a@x.example", "reason": "550 5.1.1"},
            {"event": "bounce", "type": "blocked", "email": "b@x.example"},
            {"event": "spamreport", "email": "c@x.example"}, {"event": "delivered", "email": "d@x.example"}]
    source, items = from_provider_json(json.dumps(body).encode())
    assert source == "sendgrid" and addresses(items) == [("a@x.example", False), ("c@x.example", True)]


SES_BOUNCE = {"notificationType": "Bounce", "bounce": {
    "bounceType": "Permanent", "bounceSubType": "General",
    "bouncedRecipients": [{"emailAddress": "a@x.example", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]}}
SES_COMPLAINT = {"eventType": "Complaint", "complaint": {
    "complainedRecipients": [{"emailAddress": "c@x.example"}], "complaintFeedbackType": "abuse"}}


@pytest.mark.parametrize("wrapped", [False, True])
def test_amazon_ses_notifications_bare_or_in_sns(wrapped: bool) -> None:
    for notification, expected in ((SES_BOUNCE, [("a@x.example", False)]), (SES_COMPLAINT, [("c@x.example", True)])):
        body = {"Type": "Notification", "Message": json.dumps(notification)} if wrapped else notification
        source, items = from_provider_json(json.dumps(body).encode())
        assert source == "ses" and addresses(items) == expected
    transient = {**SES_BOUNCE, "bounce": {**SES_BOUNCE["bounce"], "bounceType": "Transient"}}  # type: ignore[dict-item]
    assert from_provider_json(json.dumps(transient).encode())[1] == []


def test_postmark_records() -> None:
    hard = {"RecordType": "Bounce", "Type": "HardBounce", "Email": "a@x.example", "Description": "no mailbox"}
    soft = {**hard, "Type": "SoftBounce"}
    spam = {"RecordType": "SpamComplaint", "Email": "c@x.example"}
    assert [addresses(from_provider_json(json.dumps(b).encode())[1]) for b in (hard, soft, spam)] == [
        [("a@x.example", False)], [], [("c@x.example", True)]]


@pytest.mark.parametrize("body", [b"not json", b"\xff\xfe", b"42", b'{"hello": 1}', b'{"events": [1]}',
                                  b'{"events": [{"type": "open"}]}', b"[1]"])
def test_anything_else_is_refused_with_a_reason(body: bytes) -> None:
    with pytest.raises(InvalidInput):
        from_provider_json(body)


def test_an_rfc_3464_dsn_reports_its_permanent_failures_only() -> None:
    items = from_report((BOUNCES / "dsn_550.eml").read_bytes())
    assert addresses(items) == [("gone@example.net", False)]  # slow@example.net was only delayed
    assert "550 5.1.1" in (items[0].evidence or "")


def test_an_arf_report_is_a_complaint_of_its_original_recipient() -> None:
    assert addresses(from_report((BOUNCES / "arf_complaint.eml").read_bytes())) == [("annoyed@customer.example", True)]


def test_a_message_that_is_no_bounce_reports_nothing() -> None:
    assert from_report(b"From: a@x.example\r\nTo: b@x.example\r\nSubject: hello\r\n\r\nJust a note.\r\n") == []
    with pytest.raises(InvalidInput):
        from_report(b"  \r\n")
