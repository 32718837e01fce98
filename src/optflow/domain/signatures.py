"""The `X-Optflow-Signature` of optflow's own webhooks (chat gateways, both ways): "sha256=" and
the hex HMAC-SHA256 of the exact body bytes under a shared secret. Pure: the webhook sender
signs with it, the chat webhook checks with it."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Optflow-Signature"
_SIGNATURE_SCHEME = "sha256="


def sign_webhook_body(secret: str, body: bytes) -> str:
    """The `X-Optflow-Signature` value for `body`."""
    digest = hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()
    return _SIGNATURE_SCHEME + digest


def verify_webhook_signature(secret: str, body: bytes, signature: str | None) -> bool:
    """Whether `signature` (a header value, possibly missing) signs `body`; constant-time."""
    if signature is None:
        return False
    return hmac.compare_digest(sign_webhook_body(secret, body), signature.strip())
