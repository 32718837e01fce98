"""Outbound channel adapters against real servers on 127.0.0.1.

Twilio: the real `twilio` client against FakeTwilioApi. Email: stdlib smtplib against a real
aiosmtpd server. Chat: httpx against a loopback gateway that checks the HMAC on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import logging
import os
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from fakes.chat_gateway import FakeChatGateway
from fakes.smtp_server import SmtpSink, make_self_signed_certificate
from fakes.twilio_api import FakeTwilioApi
from optflow.adapters.senders import (
    ConsoleSender,
    OutboundMessage,
    PermanentSendError,
    RecipientUndeliverable,
    RecipientUnsubscribed,
    Router,
    Sender,
    SendError,
    SmtpSender,
    TransientSendError,
    TwilioSender,
    WebhookSender,
)
from optflow.domain.delivery import Undeliverable
from optflow.domain.model import Channel, Purpose
from optflow.domain.signatures import sign_webhook_body, verify_webhook_signature

FROM_NUMBER = "+15005550006"
CUSTOMER_NUMBER = "+14155550100"
FROM_ADDRESS = "news@acme.example"
CUSTOMER_EMAIL = "pat@customer.example"
UNSUBSCRIBE_URL = "https://acme.example/u/Zm9vYmFyLXRva2Vu"
GATEWAY_SECRET = "gateway-shared-secret"
SenderT = TypeVar("SenderT", bound=Sender)

TEXT = OutboundMessage(
    id=41,
    org_id=7,
    channel=Channel.TEXT,
    to=CUSTOMER_NUMBER,
    body="Your service appointment is confirmed for Tuesday at 9:00.",
    purpose=Purpose.TRANSACTIONAL,
)
MARKETING_EMAIL = OutboundMessage(
    id=42,
    org_id=7,
    channel=Channel.EMAIL,
    to=CUSTOMER_EMAIL,
    body="Spring tyre offers are here.",
    purpose=Purpose.MARKETING,
    subject="Spring offers",
    unsubscribe_url=UNSUBSCRIBE_URL,
)
CHAT = OutboundMessage(
    id=43,
    org_id=7,
    channel=Channel.CHAT,
    to="visitor-8812",
    body="Hello again!",
    purpose=Purpose.CONVERSATIONAL,
)


class Closing(Protocol):
    def __call__(self, sender: SenderT, /) -> SenderT: ...


@pytest.fixture
def closing() -> Iterator[Closing]:
    """Passes a sender through and closes it when the test ends (no sockets left open)."""
    with ExitStack() as stack:

        def close_at_end(sender: SenderT) -> SenderT:
            stack.callback(sender.close)
            return sender

        yield close_at_end


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections to it are refused)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- Twilio ---------------------------------------------------------------------------------


@pytest.fixture
def twilio() -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi() as fake:
        yield fake


def twilio_sender(
    fake: FakeTwilioApi,
    from_number: str | None = FROM_NUMBER,
    messaging_service_sid: str | None = None,
    timeout: float = 2.0,
) -> TwilioSender:
    return TwilioSender(
        fake.account_sid,
        fake.auth_token,
        from_number=from_number,
        messaging_service_sid=messaging_service_sid,
        base_url=fake.base_url,
        timeout=timeout,
    )


def test_twilio_text_is_posted_and_returns_the_message_sid(twilio: FakeTwilioApi, closing: Closing) -> None:
    result = closing(twilio_sender(twilio)).send(TEXT)

    [request] = twilio.sent
    assert request.status == 201
    assert request.form == {"To": CUSTOMER_NUMBER, "From": FROM_NUMBER, "Body": TEXT.body}
    assert result.provider_id == request.sid
    assert result.provider_id is not None and result.provider_id.startswith("SM")


def test_the_fake_twilio_program_journals_each_delivery_before_answering(tmp_path: Path, closing: Closing) -> None:
    """bench.multinode runs the fake as its own process and counts deliveries from its journal."""
    journal = tmp_path / "deliveries.jsonl"
    tests_dir = Path(__file__).resolve().parent.parent
    program = subprocess.Popen([sys.executable, "-m", "fakes.twilio_api", "--journal", str(journal)],
                               cwd=tests_dir, stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert program.stdout is not None
        fake = json.loads(program.stdout.readline())
        sender = closing(TwilioSender(fake["account_sid"], fake["auth_token"], from_number=FROM_NUMBER,
                                      base_url=fake["base_url"], timeout=5.0))
        result = sender.send(TEXT)
        [line] = journal.read_text(encoding="utf-8").splitlines()
    finally:
        os.killpg(program.pid, signal.SIGTERM)
        program.wait(timeout=10)
    entry = json.loads(line)
    assert (entry["to"], entry["body"], entry["status"], entry["sid"]) == (CUSTOMER_NUMBER, TEXT.body, 201,
                                                                          result.provider_id)
    assert isinstance(entry["at"], float) and isinstance(entry["client_port"], int)
    assert program.returncode == 0


def test_twilio_whatsapp_prefixes_both_addresses_once(twilio: FakeTwilioApi, closing: Closing) -> None:
    sender = closing(twilio_sender(twilio))
    sender.send(replace(TEXT, channel=Channel.WHATSAPP))
    sender.send(replace(TEXT, channel=Channel.WHATSAPP, to="whatsapp:" + CUSTOMER_NUMBER))

    assert [(r.to, r.from_) for r in twilio.accepted] == [
        ("whatsapp:" + CUSTOMER_NUMBER, "whatsapp:" + FROM_NUMBER)
    ] * 2


def test_twilio_messaging_service_is_used_unless_the_message_names_its_sender(
    twilio: FakeTwilioApi, closing: Closing
) -> None:
    sender = closing(twilio_sender(twilio, from_number=None, messaging_service_sid="MG" + "1" * 32))
    sender.send(TEXT)
    sender.send(replace(TEXT, sender="+15005550007"))

    first, second = twilio.accepted
    assert (first.messaging_service_sid, first.from_) == ("MG" + "1" * 32, None)
    assert (second.messaging_service_sid, second.from_) == (None, "+15005550007")


def test_twilio_is_asked_for_delivery_reports_when_the_message_names_a_status_callback(
    twilio: FakeTwilioApi, closing: Closing
) -> None:
    sender = closing(twilio_sender(twilio))
    sender.send(replace(TEXT, status_callback="https://optflow.example/webhooks/twilio/status?message=41"))
    sender.send(TEXT)

    assert [r.status_callback for r in twilio.accepted] == [
        "https://optflow.example/webhooks/twilio/status?message=41", None]


def test_a_whatsapp_template_goes_as_its_content_sid_and_variables(twilio: FakeTwilioApi, closing: Closing) -> None:
    sender = closing(twilio_sender(twilio))
    sender.send(replace(TEXT, channel=Channel.WHATSAPP, body="preview", content_sid="HX" + "a" * 32,
                        content_variables='{"1": "Alex"}'))

    [request] = twilio.accepted
    assert request.form["ContentSid"] == "HX" + "a" * 32
    assert json.loads(request.form["ContentVariables"]) == {"1": "Alex"}
    assert "Body" not in request.form


@pytest.mark.parametrize(("code", "reason"), [
    (30004, Undeliverable.CARRIER_BLOCKED), (30005, Undeliverable.UNKNOWN_NUMBER),
    (30006, Undeliverable.NOT_TEXTABLE)])
def test_twilio_carrier_refusals_say_the_number_cannot_be_texted(
    twilio: FakeTwilioApi, closing: Closing, code: int, reason: Undeliverable
) -> None:
    twilio.refused[CUSTOMER_NUMBER] = code
    with pytest.raises(RecipientUndeliverable) as refused:
        closing(twilio_sender(twilio)).send(TEXT)
    assert (refused.value.reason, refused.value.code) == (reason, str(code))


def test_twilio_sender_needs_an_identity() -> None:
    with pytest.raises(ValueError):
        TwilioSender("AC" + "0" * 32, "token")


def test_twilio_opted_out_recipient_raises_recipient_unsubscribed(
    twilio: FakeTwilioApi, closing: Closing
) -> None:
    twilio.unsubscribed.add(CUSTOMER_NUMBER)

    with pytest.raises(RecipientUnsubscribed) as refused:
        closing(twilio_sender(twilio)).send(TEXT)

    assert refused.value.code == "21610"
    assert twilio.accepted == []


@pytest.mark.parametrize("status", [500, 503, 429])
def test_twilio_outage_and_rate_limit_are_transient(
    twilio: FakeTwilioApi, status: int, closing: Closing
) -> None:
    sender = closing(twilio_sender(twilio))
    twilio.fail_next(1, status=status)

    with pytest.raises(TransientSendError):
        sender.send(TEXT)
    assert sender.send(TEXT).provider_id == twilio.accepted[0].sid  # the outage is over


def test_twilio_wrong_credentials_are_permanent(twilio: FakeTwilioApi, closing: Closing) -> None:
    sender = closing(
        TwilioSender(twilio.account_sid, "wrong-token", from_number=FROM_NUMBER, base_url=twilio.base_url)
    )

    with pytest.raises(PermanentSendError) as refused:
        sender.send(TEXT)

    assert type(refused.value) is PermanentSendError
    assert refused.value.code == "20003"
    assert [r.status for r in twilio.sent] == [401]


def test_twilio_invalid_number_is_permanent_with_twilios_code(
    twilio: FakeTwilioApi, closing: Closing
) -> None:
    with pytest.raises(PermanentSendError) as refused:
        closing(twilio_sender(twilio)).send(replace(TEXT, to="555-0100"))

    assert type(refused.value) is PermanentSendError
    assert refused.value.code == "21211"


def test_twilio_slow_answer_is_transient(twilio: FakeTwilioApi, closing: Closing) -> None:
    twilio.response_delay = 0.5

    with pytest.raises(TransientSendError):
        closing(twilio_sender(twilio, timeout=0.1)).send(TEXT)


def test_twilio_unreachable_is_transient(closing: Closing) -> None:
    unreachable = f"http://127.0.0.1:{closed_port()}"
    sender = closing(TwilioSender("AC" + "0" * 32, "token", from_number=FROM_NUMBER, base_url=unreachable))

    with pytest.raises(TransientSendError):
        sender.send(TEXT)


def test_twilio_refuses_email_without_calling_twilio(twilio: FakeTwilioApi, closing: Closing) -> None:
    with pytest.raises(PermanentSendError) as refused:
        closing(twilio_sender(twilio)).send(MARKETING_EMAIL)

    assert refused.value.code == "unsupported_channel"
    assert twilio.sent == []


# --- SMTP -----------------------------------------------------------------------------------


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_self_signed_certificate(tmp_path_factory.mktemp("tls"))


def smtp_sender(sink: SmtpSink, **settings: Any) -> SmtpSender:
    return SmtpSender("127.0.0.1", FROM_ADDRESS, port=sink.port, timeout=2.0, **settings)


@pytest.mark.parametrize("reply", ["550 5.1.1 <pat@customer.example>: user unknown",
                                   "551 5.1.6 user has moved", "553 5.1.3 mailbox name not allowed"])
def test_a_recipient_refused_for_good_at_rcpt_is_a_bounce(smtp: SmtpSink, reply: str) -> None:
    smtp.recipient_replies[CUSTOMER_EMAIL] = reply
    with pytest.raises(RecipientUndeliverable) as refused:
        smtp_sender(smtp).send(MARKETING_EMAIL)
    assert refused.value.reason is Undeliverable.BOUNCED and refused.value.code == reply[:3]
    assert smtp.messages == []


@pytest.mark.parametrize("reply", ["552 5.2.2 mailbox full", "554 5.7.1 policy refusal", "450 4.2.1 try later"])
def test_other_refusals_at_rcpt_do_not_judge_the_address(smtp: SmtpSink, reply: str) -> None:
    smtp.recipient_replies[CUSTOMER_EMAIL] = reply
    with pytest.raises(SendError) as refused:
        smtp_sender(smtp).send(MARKETING_EMAIL)
    assert not isinstance(refused.value, RecipientUndeliverable)


def test_the_console_does_not_pretend_to_place_a_call() -> None:
    stream = io.StringIO()
    with pytest.raises(PermanentSendError) as refused:
        ConsoleSender(stream).send(replace(TEXT, channel=Channel.CALL))
    assert refused.value.code == "not_dialled" and stream.getvalue() == ""


def test_marketing_email_carries_exactly_the_rfc_8058_headers(smtp: SmtpSink) -> None:
    message = replace(MARKETING_EMAIL, unsubscribe_mailto="unsubscribe@acme.example")
    smtp_sender(smtp).send(message)

    [mail] = smtp.messages
    assert mail.get_all("List-Unsubscribe") == [f"<{UNSUBSCRIBE_URL}>, <mailto:unsubscribe@acme.example>"]
    assert mail.get_all("List-Unsubscribe-Post") == ["List-Unsubscribe=One-Click"]


def test_marketing_email_without_mailto_lists_only_the_https_url(smtp: SmtpSink) -> None:
    smtp_sender(smtp).send(MARKETING_EMAIL)

    [mail] = smtp.messages
    assert mail.get_all("List-Unsubscribe") == [f"<{UNSUBSCRIBE_URL}>"]


@pytest.mark.parametrize("purpose", [Purpose.TRANSACTIONAL, Purpose.CONVERSATIONAL])
def test_non_marketing_email_has_no_unsubscribe_headers(smtp: SmtpSink, purpose: Purpose) -> None:
    smtp_sender(smtp).send(replace(MARKETING_EMAIL, purpose=purpose))

    [mail] = smtp.messages
    assert "List-Unsubscribe" not in mail
    assert "List-Unsubscribe-Post" not in mail


@pytest.mark.parametrize("url", [None, "http://acme.example/u/token", "https://acme.example/u/a b"])
def test_marketing_email_without_an_https_unsubscribe_url_is_refused(smtp: SmtpSink, url: str | None) -> None:
    with pytest.raises(PermanentSendError) as refused:
        smtp_sender(smtp).send(replace(MARKETING_EMAIL, unsubscribe_url=url))

    assert refused.value.code == "missing_unsubscribe_url"
    assert smtp.received == []


def test_email_envelope_headers_and_body(smtp: SmtpSink) -> None:
    smtp_sender(smtp).send(MARKETING_EMAIL)
    smtp_sender(smtp).send(replace(MARKETING_EMAIL, sender="Acme Offers <offers@acme.example>"))

    first, second = smtp.received
    assert (first.mail_from, first.rcpt_tos) == (FROM_ADDRESS, [CUSTOMER_EMAIL])
    assert first.message["From"] == FROM_ADDRESS
    assert first.message["To"] == CUSTOMER_EMAIL
    assert first.message["Subject"] == "Spring offers"
    assert first.message["Date"] is not None
    assert first.message.get_content().strip() == MARKETING_EMAIL.body
    assert second.mail_from == "offers@acme.example"
    assert second.message["From"] == "Acme Offers <offers@acme.example>"


def test_message_id_comes_from_the_outbox_id(smtp: SmtpSink) -> None:
    sender = smtp_sender(smtp)
    first = sender.send(MARKETING_EMAIL)
    retry = sender.send(MARKETING_EMAIL)
    other = sender.send(replace(MARKETING_EMAIL, id=MARKETING_EMAIL.id + 1))

    assert first.provider_id == retry.provider_id == "<optflow.7.42@acme.example>"
    assert other.provider_id == "<optflow.7.43@acme.example>"
    assert [m["Message-ID"] for m in smtp.messages] == [first.provider_id] * 2 + [other.provider_id]


def test_line_break_in_subject_is_refused_not_injected(smtp: SmtpSink) -> None:
    with pytest.raises(PermanentSendError) as refused:
        smtp_sender(smtp).send(replace(MARKETING_EMAIL, subject="Hi\r\nBcc: victim@example.net"))

    assert refused.value.code == "invalid_message"
    assert smtp.received == []


def test_hard_bounce_is_permanent_and_deferral_is_transient(smtp: SmtpSink) -> None:
    smtp.recipient_replies["gone@customer.example"] = "550 5.1.1 No mailbox by that name"
    smtp.recipient_replies["busy@customer.example"] = "451 4.3.0 Try again later"
    sender = smtp_sender(smtp)

    with pytest.raises(PermanentSendError) as bounced:
        sender.send(replace(MARKETING_EMAIL, to="gone@customer.example"))
    with pytest.raises(TransientSendError):
        sender.send(replace(MARKETING_EMAIL, to="busy@customer.example"))

    assert bounced.value.code == "550"
    assert smtp.received == []


def test_smtp_unreachable_is_transient() -> None:
    sender = SmtpSender("127.0.0.1", FROM_ADDRESS, port=closed_port(), timeout=2.0)

    with pytest.raises(TransientSendError):
        sender.send(MARKETING_EMAIL)


def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate[0]))


def test_starttls_and_login(certificate: tuple[Path, Path]) -> None:
    with SmtpSink(certificate, require_starttls=True, credentials=("mailer", "s3cret")) as sink:
        sender = smtp_sender(
            sink, starttls=True, tls_context=trusting(certificate), username="mailer", password="s3cret"
        )
        sender.send(MARKETING_EMAIL)

        assert len(sink.received) == 1


@pytest.mark.parametrize(
    ("settings", "code"),
    [
        ({"starttls": True, "username": "mailer", "password": "wrong"}, "535"),
        ({"starttls": False}, "530"),  # the server insists on TLS first
        ({"starttls": True, "use_system_trust": True}, "smtp_tls"),  # self-signed: not trusted
    ],
)
def test_smtp_configuration_mistakes_are_permanent(
    certificate: tuple[Path, Path], settings: dict[str, Any], code: str
) -> None:
    options = dict(settings)
    if not options.pop("use_system_trust", False):
        options["tls_context"] = trusting(certificate)
    with SmtpSink(certificate, require_starttls=True, credentials=("mailer", "s3cret")) as sink:
        with pytest.raises(PermanentSendError) as refused:
            smtp_sender(sink, **options).send(MARKETING_EMAIL)

        assert refused.value.code == code
        assert sink.received == []


def test_smtp_sender_needs_both_username_and_password() -> None:
    with pytest.raises(ValueError):
        SmtpSender("127.0.0.1", FROM_ADDRESS, username="mailer")


# --- Webhook ---------------------------------------------------------------------------------


@pytest.fixture
def gateway() -> Iterator[FakeChatGateway]:
    with FakeChatGateway(GATEWAY_SECRET, status=200, reply={"id": "gw-981"}) as fake:
        yield fake


def webhook_sender(gateway: FakeChatGateway, timeout: float = 2.0) -> WebhookSender:
    return WebhookSender(gateway.url, GATEWAY_SECRET, timeout=timeout)


def test_webhook_posts_signed_json_and_returns_the_gateway_id(
    gateway: FakeChatGateway, closing: Closing
) -> None:
    result = closing(webhook_sender(gateway)).send(CHAT)

    [request] = gateway.received
    assert request.signature_valid
    assert request.headers["X-Optflow-Signature"] == gateway.expected_signature(request.body)
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Idempotency-Key"] == CHAT.idempotency_key == f"optflow-{CHAT.org_id}-43"
    assert request.json() == {
        "id": 43,
        "channel": "chat",
        "to": "visitor-8812",
        "body": "Hello again!",
        "purpose": "conversational",
    }
    assert result.provider_id == "gw-981"


def test_webhook_signed_with_another_secret_fails_the_gateways_check(
    gateway: FakeChatGateway, closing: Closing
) -> None:
    closing(WebhookSender(gateway.url, "not-the-shared-secret")).send(CHAT)

    assert [r.signature_valid for r in gateway.received] == [False]


def test_webhook_success_without_an_id_has_no_provider_id(gateway: FakeChatGateway, closing: Closing) -> None:
    gateway.status, gateway.reply = 202, None

    assert closing(webhook_sender(gateway)).send(CHAT).provider_id is None


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (410, RecipientUnsubscribed),
        (500, TransientSendError),
        (503, TransientSendError),
        (429, TransientSendError),
        (400, PermanentSendError),
        (404, PermanentSendError),
        (301, PermanentSendError),
    ],
)
def test_webhook_status_mapping(
    gateway: FakeChatGateway, status: int, error: type[SendError], closing: Closing
) -> None:
    gateway.status = status

    with pytest.raises(SendError) as failed:
        closing(webhook_sender(gateway)).send(CHAT)

    assert type(failed.value) is error
    if isinstance(failed.value, PermanentSendError):
        assert failed.value.code == str(status)


def test_webhook_timeout_is_transient(gateway: FakeChatGateway, closing: Closing) -> None:
    gateway.response_delay = 0.5

    with pytest.raises(TransientSendError):
        closing(webhook_sender(gateway, timeout=0.1)).send(CHAT)


def test_webhook_unreachable_is_transient(closing: Closing) -> None:
    sender = closing(WebhookSender(f"http://127.0.0.1:{closed_port()}/outbound", GATEWAY_SECRET))

    with pytest.raises(TransientSendError):
        sender.send(CHAT)


def test_webhook_refuses_a_channel_it_was_not_given(gateway: FakeChatGateway, closing: Closing) -> None:
    with pytest.raises(PermanentSendError):
        closing(webhook_sender(gateway)).send(TEXT)

    assert gateway.received == []


def test_webhook_signature_helpers_match_a_plain_hmac() -> None:
    body = b'{"id":1,"body":"hi"}'
    expected = "sha256=" + hmac.new(b"k3y", body, hashlib.sha256).hexdigest()

    assert sign_webhook_body("k3y", body) == expected
    assert verify_webhook_signature("k3y", body, expected)
    assert not verify_webhook_signature("k3y", body + b" ", expected)
    assert not verify_webhook_signature("other", body, expected)
    assert not verify_webhook_signature("k3y", body, expected.removeprefix("sha256="))
    assert not verify_webhook_signature("k3y", body, None)


# --- Console ---------------------------------------------------------------------------------


def test_console_writes_one_readable_line_per_message(caplog: pytest.LogCaptureFixture) -> None:
    stream = io.StringIO()
    message = replace(MARKETING_EMAIL, body="Line one\nLine two")

    with caplog.at_level(logging.INFO, logger="optflow.adapters.senders.console"):
        result = ConsoleSender(stream).send(message)

    [line] = stream.getvalue().splitlines()
    assert line == (
        'outbox #42 | org 7 | email/marketing | to pat@customer.example | subject "Spring offers" '
        '| "Line one\\nLine two"'
    )
    assert json.loads(line.rpartition(" | ")[2]) == message.body
    # The printed line is the console channel's output; the log names the message, never its body
    # or the full address.
    [logged] = [record.getMessage() for record in caplog.records]
    assert "42" in logged and "pat@customer.example" not in logged and "Line one" not in logged
    assert result.provider_id == "console-42"


def test_console_defaults_to_standard_output(capsys: pytest.CaptureFixture[str]) -> None:
    ConsoleSender().send(replace(TEXT, sender=FROM_NUMBER))

    assert capsys.readouterr().out == (
        f"outbox #41 | org 7 | text/transactional | to {CUSTOMER_NUMBER} | from {FROM_NUMBER} "
        f'| "{TEXT.body}"\n'
    )


# --- Router ----------------------------------------------------------------------------------


class ClosingConsole(ConsoleSender):
    """A console sender that counts how often it is closed."""

    def __init__(self) -> None:
        super().__init__(io.StringIO())
        self.closed = 0

    def close(self) -> None:
        self.closed += 1


def test_router_sends_each_message_through_its_channels_sender(
    twilio: FakeTwilioApi, smtp: SmtpSink, closing: Closing
) -> None:
    router = Router({Channel.TEXT: closing(twilio_sender(twilio)), Channel.EMAIL: smtp_sender(smtp)})

    text_result = router.send(TEXT)
    email_result = router.send(MARKETING_EMAIL)

    assert text_result.provider_id == twilio.accepted[0].sid
    assert email_result.provider_id == smtp.messages[0]["Message-ID"]
    assert router.channels == {Channel.TEXT, Channel.EMAIL}


def test_router_passes_provider_errors_through(twilio: FakeTwilioApi, closing: Closing) -> None:
    twilio.unsubscribed.add(CUSTOMER_NUMBER)
    router = Router({Channel.TEXT: closing(twilio_sender(twilio))})

    with pytest.raises(RecipientUnsubscribed):
        router.send(TEXT)


def test_router_without_a_sender_for_the_channel_is_permanent() -> None:
    router = Router({Channel.TEXT: ConsoleSender(io.StringIO())})

    with pytest.raises(PermanentSendError, match="no sender configured for channel call"):
        router.send(replace(TEXT, channel=Channel.CALL))


def test_router_rejects_a_sender_that_cannot_serve_its_channel() -> None:
    with pytest.raises(ValueError):
        Router({Channel.TEXT: SmtpSender("127.0.0.1", FROM_ADDRESS)})


def test_router_closes_each_sender_once() -> None:
    shared, single = ClosingConsole(), ClosingConsole()
    router = Router({Channel.TEXT: shared, Channel.WHATSAPP: shared, Channel.EMAIL: single})

    router.close()

    assert (shared.closed, single.closed) == (1, 1)
