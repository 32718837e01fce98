"""A real SMTP server (aiosmtpd) on 127.0.0.1 that keeps what it receives.

The server runs on its own event loop in a thread, so blocking clients such as `smtplib` can
talk to it from the test's thread. It listens on port 0 and reads back the port the kernel
chose, which avoids both aiosmtpd Controller's readiness probe (that fails on port 0) and the
race of picking a "free" port beforehand.

    with SmtpSink() as smtp:
        SmtpSender("127.0.0.1", "news@acme.example", port=smtp.port).send(message)
        assert smtp.messages[0]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
import ssl
import subprocess
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Self

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from fakes.loopback import LoopbackService


@dataclass(frozen=True)
class ReceivedMail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage  # parsed with email.policy.default


class SmtpSink(LoopbackService):
    """Accepts every message unless told otherwise.

    `recipient_replies` maps an address to the reply its RCPT TO gets (e.g. "550 5.1.1 ...").
    With `certificate` (PEM cert and key paths) the server offers STARTTLS, and with
    `require_starttls` it refuses mail until the client has switched to TLS. With `credentials`
    it offers AUTH (over TLS only) and accepts just that login and password.
    """

    def __init__(
        self,
        certificate: tuple[Path, Path] | None = None,
        require_starttls: bool = False,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.received: list[ReceivedMail] = []
        self.recipient_replies: dict[str, str] = {}
        self._credentials = credentials
        self._require_starttls = require_starttls
        self._tls_context: ssl.SSLContext | None = None
        if certificate is not None:
            self._tls_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls_context.load_cert_chain(*certificate)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def messages(self) -> list[EmailMessage]:
        return [mail.message for mail in self.received]

    def start(self) -> Self:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failure: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            try:
                server = loop.run_until_complete(loop.create_server(self._protocol, "127.0.0.1", 0))
            except BaseException as exc:
                failure.append(exc)
                started.set()
                return
            self.port = server.sockets[0].getsockname()[1]
            started.set()
            loop.run_forever()
            server.close()
            loop.run_until_complete(server.wait_closed())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="smtp-sink", daemon=True)
        self._thread.start()
        started.wait(10)
        if failure:
            raise failure[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._loop = None
        self._thread = None

    def _protocol(self) -> SMTP:
        return SMTP(
            self,
            hostname="smtp-sink.test",
            loop=self._loop,
            tls_context=self._tls_context,
            require_starttls=self._require_starttls,
            authenticator=self._authenticate if self._credentials else None,
        )

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            self._credentials is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == self._credentials
        )
        # handled=False: aiosmtpd itself answers a refusal with 535 (otherwise it stays silent).
        return AuthResult(success=ok, handled=False)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        reply = self.recipient_replies.get(address)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.content
        raw = content if isinstance(content, bytes) else (content or "").encode("utf-8")
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(ReceivedMail(envelope.mail_from or "", list(envelope.rcpt_tos), message))
        return "250 OK"


def make_self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 and localhost (PEM cert, PEM key), via openssl."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-days", "2", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
