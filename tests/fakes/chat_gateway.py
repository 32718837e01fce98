"""A loopback chat gateway that receives optflow's signed webhooks.

It checks `X-Optflow-Signature` with its own stdlib HMAC, independently of optflow's helper,
so a test catches a sender that signs the wrong bytes or with the wrong key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


@dataclass(frozen=True)
class ReceivedWebhook:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_valid: bool

    def json(self) -> Any:
        return json.loads(self.body)


class FakeChatGateway:
    """Answers every POST with `status` and `reply` (JSON, or an empty body when None)."""

    def __init__(self, secret: str, status: int = 200, reply: dict[str, Any] | None = None) -> None:
        self.secret = secret
        self.status = status
        self.reply = reply
        self.response_delay = 0.0
        self.received: list[ReceivedWebhook] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeChatGateway is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/outbound"

    def expected_signature(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self.secret.encode(), body, hashlib.sha256).hexdigest()

    def start(self) -> FakeChatGateway:
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait
            name="chat-gateway",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeChatGateway:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(
        self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], gateway: FakeChatGateway
    ):
        super().__init__(address, handler)
        self.gateway = gateway


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = -1  # one write per answer (see FakeTwilioApi's handler)
    server: _Server

    def do_POST(self) -> None:
        gateway = self.server.gateway
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        signature = self.headers.get("X-Optflow-Signature") or ""
        valid = hmac.compare_digest(signature, gateway.expected_signature(body))
        gateway.received.append(ReceivedWebhook(self.path, dict(self.headers.items()), body, valid))
        if gateway.response_delay:
            time.sleep(gateway.response_delay)
        payload = b"" if gateway.reply is None else json.dumps(gateway.reply).encode()
        try:
            self.send_response(gateway.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (a timeout test)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `received`."""
