"""POSTing webhooks (flows' `webhook` steps, consent events), signed the Standard Webhooks way
(standardwebhooks.com).

Headers: `webhook-id` (the same on every retry of one delivery, so receivers drop copies),
`webhook-timestamp` (Unix seconds of this attempt) and `webhook-signature` (`v1,<base64>` of an
HMAC-SHA256 over `<id>.<timestamp>.<body>` under the secret). Receivers verify them with any
Standard Webhooks library and the secret (`whsec_...`): for flow webhooks the one the
installation is configured with, for consent events their endpoint's own (`endpoint_secret`).
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


def endpoint_secret(webhook_key: bytes, secret_salt: str) -> str:
    """The `whsec_` secret of an event endpoint: derived from the webhook key (kept outside the
    database, like the PIN key) and the endpoint's salt (in the database). Neither alone gives
    it, so a leaked database cannot sign events; a new salt is a new secret."""
    key = hmac.new(webhook_key, b"optflow event endpoint " + secret_salt.encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(key).decode()


class WebhookPoster:
    """Posts signed JSON bodies; one pooled HTTP client, closed with `close()`. Blocking: call it
    from the scheduler's thread, never from a web worker's event loop or inside a transaction.
    `secret` signs flow webhooks; `webhook_key` derives each event endpoint's secret."""

    def __init__(self, secret: str, timeout: float = 10.0, *, webhook_key: bytes | None = None) -> None:
        self._signer = Webhook(secret)
        self._webhook_key = webhook_key
        self._endpoint_signers: dict[str, Webhook] = {}
        self._client = httpx.Client(timeout=timeout, follow_redirects=False)

    def endpoint_secret(self, secret_salt: str) -> str:
        if self._webhook_key is None:
            raise RuntimeError("this poster was built without the webhook key")
        return endpoint_secret(self._webhook_key, secret_salt)

    def headers(self, webhook_id: str, at: datetime, body: bytes, secret_salt: str | None = None) -> dict[str, str]:
        signer = self._signer
        if secret_salt is not None:
            signer = self._endpoint_signers.get(secret_salt) or Webhook(self.endpoint_secret(secret_salt))
            self._endpoint_signers[secret_salt] = signer
        return {
            "Content-Type": "application/json",
            "webhook-id": webhook_id,
            "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signer.sign(webhook_id, at, body),
        }

    def post(self, url: str, webhook_id: str, at: datetime, body: bytes,
             secret_salt: str | None = None) -> PostOutcome:
        """One attempt; signed with the event endpoint's secret when `secret_salt` is given."""
        try:
            headers = self.headers(webhook_id, at, body, secret_salt)
            response = self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:  # refused, reset, timed out, bad URL
            return PostOutcome(None, f"{type(exc).__name__}: {exc}"[:500])
        error = None if response.is_success else f"HTTP {response.status_code}"
        return PostOutcome(response.status_code, error)

    def close(self) -> None:
        self._client.close()
