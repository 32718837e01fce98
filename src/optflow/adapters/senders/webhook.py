"""Chat and WhatsApp gateways reached by a signed HTTPS webhook.

Each message is POSTed as JSON `{"id", "channel", "to", "body", "purpose"}`; `id` is the outbox
id, which the gateway should use to drop a retried copy, and the same key, unique across orgs,
is sent as the `Idempotency-Key` header (`OutboundMessage.idempotency_key`). The header
`X-Optflow-Signature: sha256=<hex>` is an HMAC-SHA256 of the exact body bytes under a shared
secret; inbound chat webhooks are signed and checked the same way (`verify_webhook_signature`).
The signature covers the body only, so a captured request can be replayed: receivers must
de-duplicate on `id`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import httpx

from optflow.domain.model import Channel
from optflow.domain.signatures import SIGNATURE_HEADER, sign_webhook_body

from .base import (
    OutboundMessage,
    PermanentSendError,
    RecipientUnsubscribed,
    Sender,
    SendResult,
    TransientSendError,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"  # the IETF httpapi draft's name, which most gateways use


class WebhookSender(Sender):
    """POSTs each message to one gateway URL.

    2xx: sent (the provider id is the JSON response's "id", when there is one);
    410 Gone: the recipient unsubscribed at the gateway; 408, 429, 5xx, timeouts and network
    errors: transient; any other status, redirects included: permanent.
    """

    def __init__(
        self,
        url: str,
        secret: str,
        timeout: float = 10.0,
        channels: Iterable[Channel] = (Channel.CHAT, Channel.WHATSAPP),
    ) -> None:
        if not secret:
            raise ValueError("WebhookSender needs a non-empty secret")
        self.channels = frozenset(channels)
        self._url = url
        self._secret = secret
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def send(self, message: OutboundMessage) -> SendResult:
        self._require_channel(message)
        body = webhook_body(message)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign_webhook_body(self._secret, body),
            IDEMPOTENCY_HEADER: message.idempotency_key,
        }
        try:
            response = self._client.post(self._url, content=body, headers=headers)
        except httpx.TransportError as exc:  # timeouts, refused and reset connections
            raise TransientSendError(f"chat gateway unreachable: {exc!r}") from exc
        status = response.status_code
        if response.is_success:
            return SendResult(provider_id=_provider_id(response))
        if status == 410:
            raise RecipientUnsubscribed("chat gateway says the recipient unsubscribed", code=str(status))
        if status in (408, 429) or status >= 500:
            raise TransientSendError(f"chat gateway answered HTTP {status}")
        raise PermanentSendError(f"chat gateway refused the message with HTTP {status}", code=str(status))

    def close(self) -> None:
        self._client.close()


def webhook_body(message: OutboundMessage) -> bytes:
    payload = {
        "id": message.id,
        "channel": message.channel.value,
        "to": message.to,
        "body": message.body,
        "purpose": message.purpose.value,
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _provider_id(response: httpx.Response) -> str | None:
    try:
        payload = response.json()
    except ValueError:  # empty or not JSON: the gateway gave no id
        return None
    if isinstance(payload, dict) and payload.get("id") is not None:
        return str(payload["id"])
    return None
