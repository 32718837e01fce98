"""Sends each message through the sender configured for its channel."""

from __future__ import annotations

from collections.abc import Mapping

from optflow.domain.model import Channel

from .base import OutboundMessage, PermanentSendError, Sender, SendResult


class Router(Sender):
    """`Router({Channel.TEXT: twilio, Channel.WHATSAPP: twilio, Channel.EMAIL: smtp})`.

    A message on a channel with no sender fails permanently: nothing can deliver it, so
    retrying would only delay the report.
    """

    def __init__(self, routes: Mapping[Channel, Sender]) -> None:
        for channel, sender in routes.items():
            if channel not in sender.channels:
                raise ValueError(f"{type(sender).__name__} cannot send on channel {channel.value}")
        self._routes = dict(routes)
        self.channels = frozenset(self._routes)

    def send(self, message: OutboundMessage) -> SendResult:
        sender = self._routes.get(message.channel)
        if sender is None:
            raise PermanentSendError(
                f"no sender configured for channel {message.channel.value}", code="no_sender"
            )
        return sender.send(message)

    def close(self) -> None:
        """Closes each distinct sender once, even when it serves several channels."""
        distinct = {id(sender): sender for sender in self._routes.values()}
        for sender in distinct.values():
            sender.close()
