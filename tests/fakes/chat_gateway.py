"""A loopback chat gateway that receives optflow's signed webhooks.

It checks `X-Optflow-Signature` with its own stdlib HMAC, independently of optflow's helper,
so a test catches a sender that signs the wrong bytes or with the wrong key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any

from fakes.loopback import LoopbackHttpServer, LoopbackHttpService, QuietHttpHandler


@dataclass(frozen=True)
class ReceivedWebhook:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool

    def json(self) -> Any:
        return json.loads(self.body)


class FakeChatGateway(LoopbackHttpService):
    """Answers every POST with `status` and `reply` (JSON, or an empty body when None)."""

    def __init__(self, secret: str, status: int = 200, reply: dict[str, Any] | None = None) -> None:
        super().__init__(_Handler, thread_name="chat-gateway")
        self.secret = secret
        self.status = status
        self.reply = reply
        self.response_delay = 0.0
        self.received: list[ReceivedWebhook] = []

    @property
    def url(self) -> str:
        return f"{self.origin}/outbound"

    def expected_signature(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()


class _Handler(QuietHttpHandler):
    server: LoopbackHttpServer[FakeChatGateway]

    def do_POST(self) -> None:
        gateway = self.server.service
        body = self.read_body()
        signature = self.headers.get("X-Optflow-Signature") or ""
        valid = hmac.compare_digest(signature, gateway.expected_signature(body))
        gateway.received.append(ReceivedWebhook(self.path, dict(self.headers.items()), body, valid))
        if gateway.response_delay:
            time.sleep(gateway.response_delay)
        payload = b"" if gateway.reply is None else json.dumps(gateway.reply).encode()
        self.send_json(gateway.status, payload)
