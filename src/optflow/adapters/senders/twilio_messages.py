"""Text and WhatsApp through Twilio's Messages API, with the official `twilio` client.

Twilio's create-message call takes no idempotency key (twilio 9.x `messages.create` has no such
parameter; only a few other resources, such as a call's user-defined messages, take one), so a
timeout after Twilio accepted the request cannot be told apart from one before it: it is
reported as transient and a retry may deliver the message twice. The dispatcher re-checks
consent before every retry, so a retry never reaches someone who opted out in between.
"""

from __future__ import annotations

import requests
from twilio.base.exceptions import TwilioRestException, TwilioServiceException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from optflow.domain.delivery import TWILIO_UNDELIVERABLE, describe
from optflow.domain.model import Channel

from .base import (
    OutboundMessage,
    PermanentSendError,
    RecipientUndeliverable,
    RecipientUnsubscribed,
    Sender,
    SendResult,
    TransientSendError,
)

# Twilio's error for a recipient who opted out with Twilio (for instance by replying STOP).
TWILIO_UNSUBSCRIBED_RECIPIENT = 21610
WHATSAPP_PREFIX = "whatsapp:"
MESSAGING_SERVICE_SID_PREFIX = "MG"


class TwilioSender(Sender):
    """Sends `text` and `whatsapp` messages.

    The sending identity is, in order: the message's own `sender`, then `messaging_service_sid`,
    then `from_number`. A `sender` starting with "MG" is taken as a messaging service sid.
    `base_url` replaces https://api.twilio.com (a loopback fake in tests, a proxy, or a regional
    endpoint); the TWILIO_* environment variables are ignored so that only arguments count.
    """

    channels = frozenset({Channel.TEXT, Channel.WHATSAPP})

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        default_identity = messaging_service_sid or from_number
        if not default_identity:
            raise ValueError("TwilioSender needs a from_number or a messaging_service_sid")
        self._default_identity = default_identity
        self._http = TwilioHttpClient(timeout=timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http, environment={})
        if base_url is not None:
            self._client.api.base_url = base_url.rstrip("/")

    def send(self, message: OutboundMessage) -> SendResult:
        self._require_channel(message)
        whatsapp = message.channel is Channel.WHATSAPP
        identity = message.sender or self._default_identity
        content: dict[str, str] = {"body": message.body}
        if whatsapp and message.content_sid:
            content = {"content_sid": message.content_sid, "content_variables": message.content_variables or "{}"}
        if message.status_callback:
            content["status_callback"] = message.status_callback
        try:
            created = self._client.messages.create(
                to=_address(message.to, whatsapp),
                **content,
                **_identity_params(identity, whatsapp),
            )
        except (TwilioRestException, TwilioServiceException) as exc:
            raise _classify(exc.status, exc.code, exc) from exc
        except requests.RequestException as exc:
            raise TransientSendError(f"no answer from Twilio: {exc}") from exc
        return SendResult(provider_id=created.sid)

    def close(self) -> None:
        if self._http.session is not None:
            self._http.session.close()


def _identity_params(identity: str, whatsapp: bool) -> dict[str, str]:
    if identity.startswith(MESSAGING_SERVICE_SID_PREFIX):
        return {"messaging_service_sid": identity}
    return {"from_": _address(identity, whatsapp)}


def _address(number: str, whatsapp: bool) -> str:
    if whatsapp and not number.startswith(WHATSAPP_PREFIX):
        return WHATSAPP_PREFIX + number
    return number


def _classify(status: int, code: int | None, exc: Exception) -> PermanentSendError | TransientSendError:
    if code == TWILIO_UNSUBSCRIBED_RECIPIENT:
        return RecipientUnsubscribed(
            "Twilio refused: the recipient has opted out of messages from this sender", code=str(code)
        )
    undeliverable = TWILIO_UNDELIVERABLE.get(str(code))
    if undeliverable is not None:
        return RecipientUndeliverable(f"Twilio refused (error {code}): {describe(undeliverable)}", undeliverable,
                                      code=str(code))
    if status in (408, 429) or status >= 500:
        return TransientSendError(f"Twilio answered HTTP {status}: {_plain(exc)}")
    return PermanentSendError(
        f"Twilio refused the message (HTTP {status}): {_plain(exc)}",
        code=str(code) if code is not None else None,
    )


def _plain(exc: Exception) -> str:
    """The error text without the terminal colours TwilioRestException adds on a TTY."""
    if isinstance(exc, TwilioRestException):
        return str(exc.msg)
    if isinstance(exc, TwilioServiceException):
        return str(exc.detail or exc.title)
    return str(exc)
