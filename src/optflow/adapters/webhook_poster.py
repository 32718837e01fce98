"""POSTing a flow's webhook, signed the Standard Webhooks way (standardwebhooks.com).

Headers: `webhook-id` (the same on every retry of one delivery, so receivers drop copies),
`webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature` (`v1,<base64>` of an
HMAC-SHA256 over `<id>.<timestamp>.<body>` under the secret). Receivers verify them with any
Standard Webhooks library and the secret (`whsec_...`) the installation is configured with.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

import httpx
from standardwebhooks.webhooks import Webhook

from ..domain.outbound import PostOutcome

SECRET_PREFIX = "whsec_"


def derived_secret(installation_secret: str) -> str:
    """A `whsec_` secret derived from the installation's secret, for installations that set no
    webhook secret of their own. Derived (not the installation secret itself, which signs
    unsubscribe links), so handing it to a receiver reveals nothing else."""
    key = hmac.new(installation_secret.encode(), b"optflow flow webhooks", hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(key).decode()


class WebhookPoster:
    """Posts signed JSON bodies; one pooled HTTP client, closed with `close()`. Blocking: call it
    from the scheduler's thread, never from a web worker's event loop or inside a transaction."""

    def __init__(self, secret: str, timeout: float = 10.0) -> None:
        self._signer = Webhook(secret)
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def headers(self, webhook_id: str, at: datetime, body: bytes) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": self._signer.sign(webhook_id, at, body),
        }

    def post(self, url: str, webhook_id: str, at: datetime, body: bytes) -> PostOutcome:
        try:
            response = self._client.post(url, content=body, headers=self.headers(webhook_id, at, body))
        except httpx.HTTPError as exc:  # refused, reset, timed out, bad URL
            return PostOutcome(None, f"{type(exc).__name__}: {exc}"[:500])
        error = None if response.is_success else f"HTTP {response.status_code}"
        return PostOutcome(response.status_code, error)

    def close(self) -> None:
        self._client.close()
