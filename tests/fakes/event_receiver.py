"""A CRM's receiver of optflow's consent events, on 127.0.0.1.

It verifies every request with the `standardwebhooks` library itself (`Webhook(secret).verify`,
which also refuses a timestamp more than five minutes from the wall clock), as a CRM would, with
the endpoint's secret the test hands it once optflow created the endpoint. A wrong signature is
answered 401; otherwise each event's first `failures` tries get a 500 and later ones a 200. It
keeps what it got in arrival order.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from fakes.loopback import LoopbackHttpServer, LoopbackHttpService, QuietHttpHandler


@dataclass(frozen=True)
class ReceivedEvent:
    webhook_id: str
    body: bytes
    verified: bool
    error: str | None  # why the library refused it
    answered: int
    signed: bool  # the signature is right (the timestamp aside)

    def json(self) -> Any:
        return json.loads(self.body)


class EventReceiver(LoopbackHttpService):
    def __init__(self, failures: int = 0) -> None:
        super().__init__(_Handler, thread_name="event-receiver")
        self.secret: str | None = None
        self.failures = failures
        self.received: list[ReceivedEvent] = []
        self._tries: Counter[str] = Counter()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"{self.origin}/crm/consent-events"

    def delivered(self) -> list[ReceivedEvent]:
        """The events it accepted (answered 2xx), in arrival order."""
        with self._lock:
            return [event for event in self.received if 200 <= event.answered < 300]

    def signed(self, headers: dict[str, str], body: bytes) -> bool:
        """Whether the signature is right whatever the timestamp (a test whose clock runs a day
        ahead cannot pass the library's five-minute window), computed by the library."""
        if self.secret is None:
            return False
        try:
            at = datetime.fromtimestamp(int(headers.get("webhook-timestamp", "")), UTC)
        except ValueError:
            return False
        expected = Webhook(self.secret).sign(headers.get("webhook-id", ""), at, body)
        return expected in headers.get("webhook-signature", "").split(" ")

    def _answer(self, headers: dict[str, str], body: bytes) -> int:
        error = None
        try:
            if self.secret is None:
                raise WebhookVerificationError("the receiver has no secret yet")
            Webhook(self.secret).verify(body, headers)
        except WebhookVerificationError as exc:
            error = str(exc)
        signed = self.signed(headers, body)
        webhook_id = headers.get("webhook-id", "")
        with self._lock:
            self._tries[webhook_id] += 1
            status = 500 if self._tries[webhook_id] <= self.failures else 200
            if not signed:
                status = 401
            self.received.append(ReceivedEvent(webhook_id, body, error is None, error, status, signed))
        return status


class _Handler(QuietHttpHandler):
    server: LoopbackHttpServer[EventReceiver]

    def do_POST(self) -> None:
        body = self.read_body()
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.send_json(self.server.service._answer(headers, body), b"{}")
