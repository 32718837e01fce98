"""Opaque, signed unsubscribe tokens for marketing email (RFC 8058 one-click).

The POST carries no cookie or credential, so the URL itself must be hard to forge: the token is
`base64url(payload).base64url(HMAC-SHA256(payload))` under a server secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from .model import Channel, InvalidInput


@dataclass(frozen=True)
class UnsubscribeTarget:
    org_id: int
    address: str
    channel: Channel


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def make_token(secret: str, target: UnsubscribeTarget) -> str:
    payload = json.dumps([target.org_id, target.address, target.channel.value], separators=(",", ":")).encode()
    signature = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def unsubscribe_url(public_url: str, secret: str, org_id: int, address: str, channel: Channel) -> str:
    """The one-click unsubscribe link of one address and channel."""
    token = make_token(secret, UnsubscribeTarget(org_id, address, channel))
    return f"{public_url.rstrip('/')}/unsubscribe/{token}"


def read_token(secret: str, token: str) -> UnsubscribeTarget:
    """The target of a genuine token; `InvalidInput` for anything forged, truncated or garbled."""
    try:
        payload_text, signature_text = token.split(".", 1)
        payload = _unb64(payload_text)
        signature = _unb64(signature_text)
    except (ValueError, TypeError):
        raise InvalidInput("this unsubscribe link is not valid", code="invalid_token") from None
    expected = hmac.new(secret.encode(), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(expected, signature):
        raise InvalidInput("this unsubscribe link is not valid", code="invalid_token")
    try:
        org_id, address, channel = json.loads(payload)
        return UnsubscribeTarget(int(org_id), str(address), Channel(channel))
    except (ValueError, TypeError):
        raise InvalidInput("this unsubscribe link is not valid", code="invalid_token") from None
