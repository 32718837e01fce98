"""The base class of the outbound channel adapters (the service layer's `Sender` port), and the
errors they may raise (domain/outbound.py).

A sender turns one outbox row into one provider call. Its only job besides the call is to sort
failures into the two kinds the dispatcher acts on differently: `TransientSendError` (try again
later, with backoff) and `PermanentSendError` (give up on this row). `RecipientUnsubscribed` is
the permanent failure that also means "the provider holds an opt-out for this address", which
the dispatcher must turn into an opt-out of our own so that the two lists never disagree.
"""

from __future__ import annotations

import abc

from optflow.domain.model import Channel
from optflow.domain.outbound import (
    OutboundMessage,
    PermanentSendError,
    RecipientUndeliverable,
    RecipientUnsubscribed,
    SendError,
    SendResult,
    TransientSendError,
)

__all__ = [  # the senders' vocabulary comes from here with their base class
    "OutboundMessage", "PermanentSendError", "RecipientUndeliverable", "RecipientUnsubscribed", "SendError",
    "SendResult", "Sender", "TransientSendError",
]


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
