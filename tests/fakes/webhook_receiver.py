"""A loopback receiver of optflow's flow webhooks (Standard Webhooks signed).

It checks the signature with its own stdlib HMAC over `<webhook-id>.<webhook-timestamp>.<body>`,
independently of optflow and of the `standardwebhooks` package, so a test catches a poster that
signs the wrong bytes or with the wrong key. It answers with the statuses it is scripted with
(then 200), and can hold a request open until the test releases it (`hold_first`), to show what
the rest of the system does while a receiver is slow. `on_request` runs on the receiver's thread
while each request is open, to look at the world at that moment.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fakes.loopback import LoopbackHttpServer, LoopbackHttpService, QuietHttpHandler


@dataclass(frozen=True)
class ReceivedFlowWebhook:
    headers: dict[str, str]
    body: bytes
    signature_valid: bool
    answered: int

    @property
    def webhook_id(self) -> str:
        return self.headers["webhook-id"]

    def json(self) -> Any:
        return json.loads(self.body)


class FakeWebhookReceiver(LoopbackHttpService):
    def __init__(self, secret: str, statuses: Iterable[int] = (), *, hold_first: bool = False,
                 on_request: Callable[[], object] | None = None) -> None:
        super().__init__(_Handler, thread_name="webhook-receiver")
        self.secret = secret
        self.statuses = list(statuses)
        self.release = threading.Event()  # a held request is answered once this is set
        self.arrived = threading.Event()  # set when the first request is open
        self.hold_first = hold_first
        self.on_request = on_request
        self.seen_during_requests: list[object] = []
        self.received: list[ReceivedFlowWebhook] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.origin}/hooks/optflow"

    def signature_valid(self, headers: dict[str, str], body: bytes) -> bool:
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
        expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return any(hmac.compare_digest(expected, given) for given in headers.get("webhook-signature", "").split())

    def _answer(self, headers: dict[str, str], body: bytes) -> int:
        with self._lock:
            first = not self.received and not self.arrived.is_set()
            status = self.statuses.pop(0) if self.statuses else 200
            self.arrived.set()
        if self.on_request is not None:
            self.seen_during_requests.append(self.on_request())
        if first and self.hold_first:
            self.release.wait(timeout=60)
        with self._lock:
            self.received.append(ReceivedFlowWebhook(headers, body, self.signature_valid(headers, body), status))
        return status


class _Handler(QuietHttpHandler):
    server: LoopbackHttpServer[FakeWebhookReceiver]

    def do_POST(self) -> None:
        body = self.read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        status = self.server.service._answer(headers, body)
        self.send_json(status, b"{}")
