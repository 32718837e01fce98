"""What leaves optflow, as the service layer and its adapters both speak of it: a message handed to
a provider, what the provider answered, and how a send can fail.

The dispatcher acts differently on the two kinds of failure: `TransientSendError` (try again
later, with backoff) and `PermanentSendError` (give up on this row). `RecipientUnsubscribed` is
the permanent failure that also means "the provider holds an opt-out for this address", which
the dispatcher turns into an opt-out of our own so that the two lists never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass

from .delivery import Undeliverable
from .model import Channel, Purpose


@dataclass(frozen=True)
class OutboundMessage:
    """One message taken from the outbox, ready for a provider."""

    id: int  # outbox row id: stable across retries, so adapters use it as an idempotency key
    org_id: int
    channel: Channel
    to: str  # E.164 phone number, or an email address
    body: str
    purpose: Purpose
    subject: str | None = None  # email only
    sender: str | None = None  # from number, from address or messaging service sid; None: adapter's own
    unsubscribe_url: str | None = None  # https one-click URL, required on marketing email (RFC 8058)
    unsubscribe_mailto: str | None = None  # optional second List-Unsubscribe entry for marketing email
    status_callback: str | None = None  # where the provider reports delivery (Twilio's StatusCallback)
    # WhatsApp template message: the Twilio Content SID and its variables (`body` is then a preview).
    content_sid: str | None = None
    content_variables: str | None = None  # JSON object

    @property
    def idempotency_key(self) -> str:
        """The same for every attempt at this outbox row, in any process: a provider that honours
        it drops a repeated request (the webhook's `Idempotency-Key`, the email's Message-ID).
        Twilio's Messages API takes none (its create call has no such parameter)."""
        return f"optflow-{self.org_id}-{self.id}"


@dataclass(frozen=True)
class SendResult:
    provider_id: str | None  # the provider's id for the message (a Twilio SM sid, a Message-ID, ...)


class SendError(Exception):
    """The message was not handed over to the provider."""


class TransientSendError(SendError):
    """Worth retrying later: timeouts, refused connections, rate limits, provider outages."""


class PermanentSendError(SendError):
    """Retrying will not help. `code` is the provider's error code when it gave one."""

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class RecipientUnsubscribed(PermanentSendError):
    """The provider refused because the recipient opted out with the provider itself."""


class RecipientUndeliverable(PermanentSendError):
    """The provider refused because the address cannot take messages on the channel: a mail
    server's permanent refusal of the recipient (SMTP 550/551/553 at RCPT TO), a carrier's
    30004/30005/30006. `reason` is a `domain.delivery.Undeliverable`."""

    def __init__(self, message: str, reason: Undeliverable, code: str | None = None) -> None:
        super().__init__(message, code)
        self.reason = reason


@dataclass(frozen=True)
class PostOutcome:
    """What one webhook POST got: the HTTP status, or None and the reason when there was no answer."""

    status: int | None
    error: str | None = None

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300
