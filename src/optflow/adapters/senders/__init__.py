"""Outbound channel adapters: one small class with one `send` method per provider.

The dispatcher codes against `Sender`; `Router` picks the sender for a message's channel.
"""

from .base import (
    OutboundMessage,
    PermanentSendError,
    RecipientUndeliverable,
    RecipientUnsubscribed,
    Sender,
    SendError,
    SendResult,
    TransientSendError,
)
from .console import ConsoleSender
from .router import Router
from .smtp import SmtpSender
from .twilio_messages import TwilioSender
from .webhook import WebhookSender

__all__ = [
    "ConsoleSender",
    "OutboundMessage",
    "PermanentSendError",
    "RecipientUndeliverable",
    "RecipientUnsubscribed",
    "Router",
    "SendError",
    "SendResult",
    "Sender",
    "SmtpSender",
    "TransientSendError",
    "TwilioSender",
    "WebhookSender",
]
