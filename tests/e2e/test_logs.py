"""The logs of the real `optflow serve`: JSON lines, each line of a request with its request id,
and no full phone number, email address or message body, even when a STOP fails half-way and the
database error that broke it is logged (the opt-out is still recorded by the fallback path)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from twilio.request_validator import RequestValidator

from e2e.conftest import Server, _start, _stop, fresh_number
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.bootstrap import bootstrap
from optflow.config import Config
from optflow.domain.model import Channel, State

pytestmark = pytest.mark.e2e

EMAIL = "sam.smith@example.com"
BODY = f"STOP texting me, write to {EMAIL} instead"
REQUEST_ID = "trace-4f9c2a"

# Every reply or note optflow stores after the opt-out fails: the STOP's own transaction breaks
# after the consent changed, and only the fallback path can record the opt-out.
FORCED_FAILURE = """
CREATE TRIGGER forced_failure BEFORE INSERT ON messages WHEN NEW.direction = 'out'
BEGIN SELECT RAISE(ABORT, 'forced failure for the log test'); END
"""


@pytest.fixture(scope="module")
def failing_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = _start(tmp_path_factory.mktemp("logs"), {"OPTFLOW_LOG_LEVEL": "INFO"})
    database = server.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        conn.executescript(FORCED_FAILURE)
    yield server
    _stop(server.process)


def post_sms(server: Server, params: dict[str, str], headers: dict[str, str]) -> httpx.Response:
    url = server.base_url + "/webhooks/twilio/sms"
    signature = RequestValidator(server.twilio_token).compute_signature(url, params)
    with httpx.Client(timeout=30) as client:
        return client.post(url, data=params, headers={"X-Twilio-Signature": signature, **headers})


def json_lines(path: Path) -> list[dict[str, Any]]:
    """The server's log lines (its banner on stdout is plain text and skipped)."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def test_a_failing_stop_is_logged_as_json_with_its_request_id_and_no_personal_data(failing_server: Server) -> None:
    number = fresh_number()
    response = post_sms(failing_server, {"From": number, "To": failing_server.org_number, "Body": BODY,
                                         "MessageSid": failing_server.next_sid()}, {"X-Request-ID": REQUEST_ID})
    assert response.status_code == 500, response.text
    assert response.headers["X-Request-ID"] == REQUEST_ID

    system = bootstrap(Config(database_url=failing_server.database_url), create_schema=False)
    with SqlUnitOfWork(system.engine) as uow:
        assert uow.consents.get(failing_server.org_id, number, Channel.TEXT).state is State.OPTED_OUT
        [entry] = [e for e in uow.ledger.entries(failing_server.org_id) if e["address"] == number]
    system.close()
    # The record of what the customer wrote stays in the database, with the rule that read it as a STOP.
    assert entry["evidence"].startswith(BODY + "\n") and "[opt_out by phrase:" in entry["evidence"]

    everything = failing_server.log_path.read_text()
    lines = json_lines(failing_server.log_path)
    ours = [line for line in lines if line.get("request_id") == REQUEST_ID]
    assert any(line["level"] == "error" and "IntegrityError" in line.get("exception", "") for line in ours)
    assert any("parameters hidden" in line.get("exception", "") for line in lines)
    masked = number[:2] + "*" * 6 + number[-4:]
    assert any(masked in line["event"] for line in lines)  # the fallback names the number, masked
    assert number not in everything and number[1:] not in everything
    assert EMAIL not in everything and "texting me" not in everything


def test_every_response_carries_a_request_id(failing_server: Server) -> None:
    with httpx.Client(base_url=failing_server.base_url, timeout=15) as client:
        generated = client.get("/healthz").headers["X-Request-ID"]
        refused = client.get("/api/v1/contacts/1", headers={"X-Request-ID": "bad id <script>"})
    assert len(generated) == 32
    assert refused.status_code == 401 and refused.headers["X-Request-ID"] not in ("", "bad id <script>")
