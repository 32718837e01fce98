"""What the fakes share: a service on 127.0.0.1 run in a daemon thread, started with `start()`
(or `with`) and stopped with `stop()`.

`LoopbackService` is the lifecycle alone (the SMTP sink runs its own event loop);
`LoopbackHttpService` adds a stdlib `ThreadingHTTPServer` on a port the kernel picks, whose
request handlers reach the fake through `self.server.service`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

ServiceT = TypeVar("ServiceT")


class LoopbackService(ABC):
    @abstractmethod
    def start(self) -> Self: ...

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class LoopbackHttpServer(ThreadingHTTPServer, Generic[ServiceT]):
    """Listens on a free port of 127.0.0.1 and lets its handlers reach `service`."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, handler: type[BaseHTTPRequestHandler], service: ServiceT) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.service = service


class LoopbackHttpService(LoopbackService):
    """Serves `handler` in a thread named `thread_name` from `start()` until `stop()`."""

    def __init__(self, handler: type[BaseHTTPRequestHandler], thread_name: str) -> None:
        self._handler = handler
        self._thread_name = thread_name
        self._server: LoopbackHttpServer[Self] | None = None
        self._thread: Thread | None = None

    @property
    def origin(self) -> str:
        """`http://127.0.0.1:<port>` while running."""
        if self._server is None:
            raise RuntimeError(f"{type(self).__name__} is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> Self:
        self._server = LoopbackHttpServer(self._handler, self)
        self._thread = Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},  # how long stop() may wait
            name=self._thread_name,
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


class QuietHttpHandler(BaseHTTPRequestHandler):
    """Keep-alive HTTP/1.1 with each answer sent in one write, and no request log on stderr."""

    protocol_version = "HTTP/1.1"  # keep-alive, as pooling clients (twilio, httpx) expect
    # Buffer the answer and send it in one piece: headers and body written separately meet
    # Nagle's algorithm and the client's delayed ACK, adding ~40 ms to every request.
    wbufsize = -1

    def read_body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def send_json(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        """Answer `status` with the JSON `body`, unless the client has already hung up."""
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up waiting (a timeout test)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read what the fake recorded, not a request log."""
