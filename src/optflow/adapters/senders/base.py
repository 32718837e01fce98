"""The port every outbound channel adapter implements, and the errors it may raise.

A sender turns one outbox row into one provider call. Its only job besides the call is to sort
failures into the two kinds the dispatcher acts on differently: `TransientSendError` (try again
later, with backoff) and `PermanentSendError` (give up on this row). `RecipientUnsubscribed` is
the permanent failure that also means "the provider holds an opt-out for this address", which
the dispatcher must turn into an opt-out of our own so that the two lists never disagree.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from optflow.domain.delivery import Undeliverable
from optflow.domain.model import Channel, Purpose


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


class Sender(abc.ABC):
    """One outbound channel adapter: one `send` call per message.

    `send` either returns once the provider has accepted the message or raises a `SendError`
    subclass; any other exception is a bug in the adapter.
    """

    channels: frozenset[Channel]

    @abc.abstractmethod
    def send(self, message: OutboundMessage) -> SendResult: ...

    def close(self) -> None:  # noqa: B027 - deliberately a no-op for senders that hold nothing
        """Release connections and other resources; the sender is not used afterwards."""

    def _require_channel(self, message: OutboundMessage) -> None:
        if message.channel not in self.channels:
            raise PermanentSendError(
                f"{type(self).__name__} cannot send on channel {message.channel.value}",
                code="unsupported_channel",
            )
