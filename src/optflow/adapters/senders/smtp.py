"""Email through any SMTP server, with the standard library's `smtplib`.

Marketing mail carries RFC 8058 one-click unsubscribe: a `List-Unsubscribe` header with
exactly one https URI (and optionally a mailto URI), and `List-Unsubscribe-Post:
List-Unsubscribe=One-Click`. A marketing message without an https unsubscribe URL is refused
rather than sent without one. Other mail carries neither header.

The Message-ID is derived from the outbox id, so a message retried after an unclear failure
keeps its Message-ID and receiving systems can tell the copies are one message.

One SMTP connection per message keeps the sender stateless and safe to share between threads.
"""

from __future__ import annotations

import email.policy
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from optflow.domain.delivery import Undeliverable
from optflow.domain.model import Channel, Purpose

from .base import (
    OutboundMessage,
    PermanentSendError,
    RecipientUndeliverable,
    Sender,
    SendError,
    SendResult,
    TransientSendError,
)

# Header lines are kept whole up to RFC 5322's hard limit of 998 characters, so a long
# List-Unsubscribe value is not folded in the middle of the list.
_UNFOLDED_HEADERS = email.policy.default.clone(max_line_length=998)
ONE_CLICK_POST_VALUE = "List-Unsubscribe=One-Click"
# Inside the header each URI sits between angle brackets in a comma-separated list.
_HTTPS_UNSUBSCRIBE_URL = re.compile(r"https://[^\s<>,]+")
_MAILTO_TARGET = re.compile(r"[^\s<>,@]+@[^\s<>,]+")


class SmtpSender(Sender):
    channels = frozenset({Channel.EMAIL})

    def __init__(
        self,
        host: str,
        from_address: str,
        port: int = 25,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        """`tls_context` defaults to the system's trusted CAs; pass one to trust a private CA."""
        if (username is None) != (password is None):
            raise ValueError("SmtpSender needs both username and password, or neither")
        self._host = host
        self._port = port
        self._from_address = from_address
        self._credentials = (username, password) if username is not None and password is not None else None
        self._starttls = starttls
        self._timeout = timeout
        self._tls_context = tls_context

    def send(self, message: OutboundMessage) -> SendResult:
        self._require_channel(message)
        mail = build_email(message, message.sender or self._from_address)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=self._timeout) as smtp:
                if self._starttls:
                    smtp.starttls(context=self._tls_context or ssl.create_default_context())
                if self._credentials is not None:
                    smtp.login(*self._credentials)
                smtp.send_message(mail)
        except OSError as exc:  # smtplib.SMTPException and ssl.SSLError are OSErrors too
            raise _classify(exc) from exc
        return SendResult(provider_id=mail["Message-ID"])


def build_email(message: OutboundMessage, from_address: str) -> EmailMessage:
    """The email for one outbox message, with the unsubscribe headers marketing mail requires."""
    mail = EmailMessage(policy=_UNFOLDED_HEADERS)
    try:
        mail["From"] = from_address
        mail["To"] = message.to
        if message.subject is not None:
            mail["Subject"] = message.subject
        mail["Date"] = formatdate(usegmt=True)
        mail["Message-ID"] = message_id_for(message, from_address)
        if message.purpose is Purpose.MARKETING:
            mail["List-Unsubscribe"] = list_unsubscribe_value(message)
            mail["List-Unsubscribe-Post"] = ONE_CLICK_POST_VALUE
    except ValueError as exc:  # e.g. a line break smuggled into an address or the subject
        raise PermanentSendError(f"cannot build email: {exc}", code="invalid_message") from exc
    mail.set_content(message.body)
    return mail


def message_id_for(message: OutboundMessage, from_address: str) -> str:
    _, _, domain = parseaddr(from_address)[1].rpartition("@")
    domain = domain or "optflow.invalid"
    return f"<optflow.{message.org_id}.{message.id}@{domain}>"


def list_unsubscribe_value(message: OutboundMessage) -> str:
    url = message.unsubscribe_url
    if url is None or not _HTTPS_UNSUBSCRIBE_URL.fullmatch(url):
        raise PermanentSendError(
            "marketing email needs an https one-click unsubscribe URL (RFC 8058)",
            code="missing_unsubscribe_url",
        )
    entries = [f"<{url}>"]
    if message.unsubscribe_mailto is not None:
        target = message.unsubscribe_mailto.removeprefix("mailto:")
        if not _MAILTO_TARGET.fullmatch(target):
            raise PermanentSendError("unsubscribe mailto is not an email address", code="invalid_message")
        entries.append(f"<mailto:{target}>")
    return ", ".join(entries)


# Replies to RCPT TO that say the mailbox does not exist or will never take mail from us: the
# address bounced (RFC 5321 4.2.3). Other 5xx at RCPT (552, 554: storage, policy) fail the
# message without judging the address.
_BOUNCED_RCPT_CODES = frozenset({550, 551, 553})


def _classify(exc: OSError) -> SendError:
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        code, reply = next(iter(exc.recipients.values()))
        if code in _BOUNCED_RCPT_CODES:
            text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
            return RecipientUndeliverable(f"SMTP server refused the recipient: {code} {text}",
                                          Undeliverable.BOUNCED, code=str(code))
        return _by_reply_code(code, reply)
    if isinstance(exc, smtplib.SMTPResponseException):
        return _by_reply_code(exc.smtp_code, exc.smtp_error)
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return TransientSendError(f"SMTP server closed the connection: {exc}")
    if isinstance(exc, smtplib.SMTPException):
        # smtplib's own complaints: no STARTTLS or AUTH on the server, no usable auth method.
        return PermanentSendError(f"SMTP server does not support our settings: {exc}", code="smtp_config")
    if isinstance(exc, ssl.SSLCertVerificationError):
        return PermanentSendError(f"SMTP server certificate not trusted: {exc}", code="smtp_tls")
    # Refused, reset, timed out, name not resolved, TLS handshake cut short.
    return TransientSendError(f"SMTP server unreachable: {exc}")


def _by_reply_code(code: int, reply: bytes | str) -> SendError:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else reply
    if 500 <= code <= 599:
        return PermanentSendError(f"SMTP server refused the message: {code} {text}", code=str(code))
    return TransientSendError(f"SMTP server deferred the message: {code} {text}")
