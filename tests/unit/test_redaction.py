"""Log lines carry no full phone number, no email address and no message body: the masking
functions, and the processor every log line (optflow's and libraries' alike) goes through."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from optflow.domain.redaction import mask_address, mask_email, mask_phone, mask_text
from optflow.entrypoints.logging_setup import configure_logging, request_id_from

PHONE = "+14155552671"


@pytest.mark.parametrize("number, masked", [
    ("+14155552671", "+1******2671"),
    ("+447911123456", "+4*******3456"),
    ("+1 (415) 555-2671", "+1******2671"),
    ("4155552671", "******2671"),
    ("+3312345", "+3****45"),
])
def test_a_phone_number_keeps_only_its_last_digits(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


def test_text_is_masked_wherever_a_number_or_address_appears() -> None:
    text = f"opt-out of whatsapp:{PHONE} (sam.smith+x@example.com) after IntegrityError"
    assert mask_text(text) == "opt-out of whatsapp:+1******2671 (s***@example.com) after IntegrityError"
    assert mask_email("write to sam@mail.example.co.uk") == "write to s***@mail.example.co.uk"


@pytest.mark.parametrize("untouched", [
    "SM0123456789abcdef0123456789abcdef", "2027-03-01T09:00:00+00:00", "enrolment 12345 at step 3",
    "a1b2c3d4e5f60718293a4b5c6d7e8f90", "line 1234567",
])
def test_ids_times_and_hashes_are_left_alone(untouched: str) -> None:
    assert mask_text(untouched) == untouched


def test_an_address_of_any_channel_is_masked() -> None:
    assert mask_address(PHONE) == "+1******2671"
    assert mask_address("sam@example.com") == "s***@example.com"
    assert mask_address("chat-user-4242") == "ch***42"
    assert mask_address(None) == ""


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    root = logging.getLogger()
    before = (list(root.handlers), root.level)
    configure_logging(json=True, level=logging.INFO, stream=stream)
    yield stream
    for handler in list(root.handlers):
        if handler not in before[0]:
            root.removeHandler(handler)
    root.setLevel(before[1])
    structlog.reset_defaults()


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_stdlib_records_become_masked_json_lines(captured: io.StringIO) -> None:
    logging.getLogger("optflow.bus").error("recorded the opt-out of %s", PHONE, extra={"body": "STOP it, Sam here"})
    [line] = lines(captured)
    assert line["event"] == "recorded the opt-out of +1******2671"
    assert (line["level"], line["logger"], line["body"]) == ("error", "optflow.bus", "[omitted]")
    assert "timestamp" in line and PHONE not in captured.getvalue() and "Sam here" not in captured.getvalue()


def test_structlog_events_lose_their_bodies_and_exceptions_are_masked(captured: io.StringIO) -> None:
    log = structlog.get_logger("optflow.test")
    try:
        raise ValueError(f"no contact has {PHONE} or sam@example.com")
    except ValueError:
        log.exception("lookup failed", to=PHONE, text="hello there", evidence="STOP", reply={"body": "bye"},
                      count=3)
    [line] = lines(captured)
    assert (line["to"], line["text"], line["evidence"], line["reply"], line["count"]) == (
        "+1******2671", "[omitted]", "[omitted]", "[omitted]", 3)
    exception = str(line["exception"])
    assert "ValueError: no contact has +1******2671 or s***@example.com" in exception
    assert PHONE not in captured.getvalue() and "sam@example.com" not in captured.getvalue()


def test_bodies_are_logged_only_when_the_debug_setting_says_so(captured: io.StringIO) -> None:
    configure_logging(json=True, level=logging.INFO, log_bodies=True, stream=captured)
    structlog.get_logger("optflow.test").info("inbound", body=f"call me on {PHONE}")
    [line] = lines(captured)
    assert line["body"] == "call me on +1******2671"  # the text, still without the full number


def test_bound_context_such_as_a_request_id_is_on_every_line(captured: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(request_id="req-1")
    try:
        logging.getLogger("sanic.error").warning("something")
    finally:
        structlog.contextvars.clear_contextvars()
    assert lines(captured)[0]["request_id"] == "req-1"


@pytest.mark.parametrize("header", ["", "   ", "a" * 129, "id with spaces", "<script>", "line\nbreak", None])
def test_an_unusable_request_id_header_is_replaced(header: str | None) -> None:
    generated = request_id_from(header)
    assert generated != header and len(generated) == 32


def test_a_sane_request_id_header_is_kept() -> None:
    assert request_id_from("7f1c2a9e-4b1d-4a51-9d0b-2f0f6c1e1a77") == "7f1c2a9e-4b1d-4a51-9d0b-2f0f6c1e1a77"
