"""Text from outside is always storable: the real server on PostgreSQL (which refuses NUL in text,
where SQLite takes it), driven over HTTP with signed webhooks. Each STOP below answered 500 and
left the contact opted in, and the provider's retry failed the same way, before the webhooks made
the text storable."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import func, select

from conftest import postgres_url_or_skip
from e2e.conftest import Server, _start, _stop, fresh_number
from e2e.helpers import twiml_messages
from optflow.adapters import db, orm
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.domain.model import Channel, State
from optflow.domain.signatures import sign_webhook_body

pytestmark = [pytest.mark.e2e, pytest.mark.postgres]


@pytest.fixture(scope="module")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = _start(tmp_path_factory.mktemp("e2e-pg"), database_url=postgres_url_or_skip())
    yield srv
    _stop(srv.process)


def consent_state(server: Server, address: str, channel: Channel = Channel.TEXT) -> State:
    engine = db.make_engine(server.database_url)
    try:
        with SqlUnitOfWork(engine) as uow:
            return uow.consents.get(server.org_id, address, channel).state
    finally:
        engine.dispose()


def inbound_count(server: Server, address: str) -> int:
    engine = db.make_engine(server.database_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(orm.messages).where(
                orm.messages.c.address == address, orm.messages.c.direction == "in")).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize(("body", "sid_suffix"), [
    pytest.param("STOP\x00", "", id="nul-after"),
    pytest.param("\x00STOP", "", id="nul-before"),
    pytest.param("stop\x00 texting me", "", id="nul-in-a-sentence"),
    pytest.param("STOP", "\x00", id="nul-in-message-sid"),
])
def test_a_signed_twilio_stop_with_a_nul_opts_out_and_its_retry_is_recognised(
        pg_server: Server, body: str, sid_suffix: str) -> None:
    number = fresh_number()
    sid = pg_server.next_sid() + sid_suffix
    first = pg_server.sms(number, body, sid=sid)
    assert first.status_code == 200, first.text
    [confirmation] = twiml_messages(first)
    assert "START" in confirmation
    assert consent_state(pg_server, number) is State.OPTED_OUT

    retry = pg_server.sms(number, body, sid=sid)  # Twilio retries with the same MessageSid
    assert twiml_messages(retry) == [confirmation]  # the stored answer, nothing done twice
    assert inbound_count(pg_server, number) == 1


@pytest.mark.parametrize("text", [
    pytest.param("stop\u0000", id="nul"),
    pytest.param("STOP\ud800", id="lone-surrogate"),
])
def test_a_signed_chat_stop_with_unstorable_text_opts_out_and_its_retry_is_recognised(
        pg_server: Server, text: str) -> None:
    number = fresh_number()
    raw = json.dumps({"channel": "chat", "from": number, "to": pg_server.org_number, "text": text,
                      "message_id": f"chat-{number}"}).encode()  # JSON escapes: \u0000, \ud800
    headers = {"Content-Type": "application/json",
               "X-Optflow-Signature": sign_webhook_body(pg_server.chat_secret, raw)}
    with httpx.Client(base_url=pg_server.base_url, timeout=15) as client:
        first = client.post("/webhooks/chat", content=raw, headers=headers)
        assert first.status_code == 200, first.text
        assert first.json()["intent"] == "opt_out" and first.json()["duplicate"] is False
        assert consent_state(pg_server, number, Channel.CHAT) is State.OPTED_OUT

        retry = client.post("/webhooks/chat", content=raw, headers=headers)
    assert retry.status_code == 200 and retry.json()["duplicate"] is True
    assert inbound_count(pg_server, number) == 1

