"""Bounces and complaints, read from what mail systems send: the JSON events of hosted mail
providers, and RFC 822 reports that reach a bounce mailbox (RFC 3464 delivery status
notifications, RFC 5965 ARF complaint reports, and the many non-standard bounce formats
`flufl.bounce` knows). Only parsing: no IO, no clock.

Only what means "stop mailing this address" is kept: permanent bounces and spam complaints.
Temporary failures (a full mailbox, a greylisting, SendGrid's `blocked`, SES's `Transient`) are
dropped: the address may work tomorrow.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import json
from collections.abc import Iterable, Mapping
from email.message import Message
from typing import Any

from flufl.bounce import all_failures

from .commands import MailFeedback
from .model import InvalidInput

MAX_EVENTS = 1000  # per request: a provider batches at most a few hundred


def from_provider_json(raw: bytes) -> tuple[str, list[MailFeedback]]:
    """The bounces and complaints in a mail provider's webhook body, and the format's name.

    Accepted shapes:
    - generic: `{"events": [{"type": "bounce"|"complaint", "email": ..., "permanent": true,
      "reason": ...}]}`, or one such event object alone;
    - SendGrid's event webhook: an array of events (`bounce` but not of type `blocked`,
      `spamreport`; other events are ignored);
    - Amazon SES notifications (`notificationType` or `eventType` Bounce / Complaint), also
      wrapped in an Amazon SNS `Notification` whose `Message` is that JSON as a string;
    - Postmark: `RecordType` `Bounce` of type `HardBounce`, or `SpamComplaint`.
    """
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}", code="bad_json") from None
    if isinstance(payload, list):
        return "sendgrid", _capped(_sendgrid(payload))
    if not isinstance(payload, dict):
        raise InvalidInput("the body must be a JSON object or array", code="unknown_format")
    if payload.get("Type") == "Notification" and isinstance(payload.get("Message"), str):
        try:
            payload = json.loads(payload["Message"])
        except json.JSONDecodeError:
            raise InvalidInput("the SNS notification's Message is not JSON", code="unknown_format") from None
        if not isinstance(payload, dict):
            raise InvalidInput("the SNS notification's Message is not a JSON object", code="unknown_format")
    if "notificationType" in payload or "eventType" in payload:
        return "ses", _capped(_ses(payload))
    if "RecordType" in payload:
        return "postmark", _capped(_postmark(payload))
    if "events" in payload or "type" in payload:
        events = payload.get("events", [payload])
        if not isinstance(events, list):
            raise InvalidInput("`events` must be an array", code="unknown_format")
        return "generic", _capped(_generic(events))
    raise InvalidInput("unknown event format: send the generic form, SendGrid's, Amazon SES's (or its SNS "
                       "notification) or Postmark's", code="unknown_format")


def _capped(items: list[MailFeedback]) -> list[MailFeedback]:
    if len(items) > MAX_EVENTS:
        raise InvalidInput(f"more than {MAX_EVENTS} events in one request", code="too_many_events")
    return items


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _feedback(address: Any, complaint: bool, evidence: Any) -> list[MailFeedback]:
    text = _text(address)
    return [MailFeedback(text.strip(), complaint, (_text(evidence) or "")[:500] or None)] if text else []


def _generic(events: Iterable[Any]) -> list[MailFeedback]:
    items: list[MailFeedback] = []
    for event in events:
        if not isinstance(event, Mapping):
            raise InvalidInput("each event must be a JSON object", code="unknown_format")
        kind = event.get("type")
        if kind not in ("bounce", "complaint"):
            raise InvalidInput(f"event type {kind!r}: use bounce or complaint", code="unknown_format")
        if kind == "bounce" and event.get("permanent", True) is not True:
            continue
        items += _feedback(event.get("email"), kind == "complaint", event.get("reason"))
    return items


def _sendgrid(events: Iterable[Any]) -> list[MailFeedback]:
    items: list[MailFeedback] = []
    for event in events:
        if not isinstance(event, Mapping):
            raise InvalidInput("each SendGrid event must be a JSON object", code="unknown_format")
        name = event.get("event")
        if name == "bounce" and event.get("type") != "blocked":
            items += _feedback(event.get("email"), False, event.get("reason") or event.get("status"))
        elif name == "spamreport":
            items += _feedback(event.get("email"), True, "spam report")
    return items


def _ses(notification: Mapping[str, Any]) -> list[MailFeedback]:
    kind = notification.get("notificationType") or notification.get("eventType")
    if kind == "Bounce":
        bounce = notification.get("bounce")
        if not isinstance(bounce, Mapping) or bounce.get("bounceType") != "Permanent":
            return []
        return [item for recipient in _recipients(bounce, "bouncedRecipients")
                for item in _feedback(recipient.get("emailAddress"), False,
                                      recipient.get("diagnosticCode") or bounce.get("bounceSubType"))]
    if kind == "Complaint":
        complaint = notification.get("complaint")
        if not isinstance(complaint, Mapping):
            return []
        return [item for recipient in _recipients(complaint, "complainedRecipients")
                for item in _feedback(recipient.get("emailAddress"), True,
                                      complaint.get("complaintFeedbackType") or "complaint")]
    return []


def _recipients(section: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    recipients = section.get(key)
    return [r for r in recipients if isinstance(r, Mapping)] if isinstance(recipients, list) else []


def _postmark(record: Mapping[str, Any]) -> list[MailFeedback]:
    kind = record.get("RecordType")
    if kind == "Bounce" and record.get("Type") == "HardBounce":
        return _feedback(record.get("Email"), False, record.get("Description") or record.get("Details"))
    if kind == "SpamComplaint":
        return _feedback(record.get("Email"), True, "spam complaint")
    return []


# ------------------------------------------------------------------------------ bounce mailbox


def from_report(raw: bytes) -> list[MailFeedback]:
    """The addresses an RFC 822 message to the bounce mailbox reports: an ARF complaint
    (`multipart/report; report-type=feedback-report`) names the complaining recipient; anything
    else is read as a bounce, and only permanent failures count (RFC 3464 `Action: failed` with a
    5.x.x status, or a known non-standard bounce format)."""
    if not raw.strip():
        raise InvalidInput("the message is empty", code="empty_message")
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    if message.get_content_type() == "multipart/report" \
            and (message.get_param("report-type") or "").lower() == "feedback-report":  # type: ignore[union-attr]
        return _arf_complaint(message)
    try:
        _, permanent = all_failures(message)
    except (ValueError, LookupError, TypeError, AttributeError) as exc:  # a heuristic tripped on odd input
        raise InvalidInput(f"could not read the message as a bounce report: {type(exc).__name__}",
                           code="unreadable_report") from None
    diagnostic = _diagnostic(message)
    return [MailFeedback(address.decode("utf-8", "replace") if isinstance(address, bytes) else str(address),
                         False, diagnostic) for address in sorted(permanent)]


def _arf_complaint(message: Message) -> list[MailFeedback]:
    recipients: list[str] = []
    for part in message.walk():
        content_type = part.get_content_type()
        if content_type == "message/feedback-report":
            fields = _report_fields(part)
            recipients += [email.utils.parseaddr(value)[1] for name, value in fields if name == "original-rcpt-to"]
        elif content_type in ("message/rfc822", "text/rfc822-headers") and not recipients:
            original = part.get_payload(0) if part.is_multipart() else email.message_from_string(
                str(part.get_payload()), policy=email.policy.compat32)
            if isinstance(original, Message) and original.get("To"):
                recipients.append(email.utils.parseaddr(str(original["To"]))[1])
    return [MailFeedback(address, True, "ARF feedback report (spam complaint)") for address in recipients if address]


def _blocks(part: Message) -> list[Message]:
    """The header blocks of a feedback or delivery-status part (one per recipient in a DSN)."""
    payload = part.get_payload()
    return [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) \
        else [email.message_from_string(str(payload), policy=email.policy.compat32)]


def _report_fields(part: Message) -> list[tuple[str, str]]:
    """The `Name: value` lines of a feedback or delivery-status part, lower-cased names."""
    return [(name.lower(), str(value)) for block in _blocks(part) for name, value in block.items()]


def _diagnostic(message: Message) -> str | None:
    """The `Diagnostic-Code` (or `Status`) of a DSN's first failed recipient, as evidence; None
    for other formats."""
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status":
            continue
        for block in _blocks(part):
            if str(block.get("Action", "")).strip().lower() == "failed":
                found = block.get("Diagnostic-Code") or block.get("Status")
                return " ".join(str(found).split())[:500] if found else None
    return None
