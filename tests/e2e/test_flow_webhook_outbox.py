"""Issue 9, item 4, through the real server: a flow's webhook goes out from the scheduler, never
from a web worker. While the receiver holds the webhook's request open (it waits for the test to
release it), a signed STOP to the same server is answered; the receiver then answers 500, and
the webhook is delivered on its retry, signed."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import select

from e2e.conftest import _start, _stop, fresh_number
from e2e.helpers import API, twiml_messages
from fakes.webhook_receiver import FakeWebhookReceiver
from optflow.adapters import db, orm

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + "ZTJlLWZsb3ctd2ViaG9vay1zZWNyZXQtMDEyMzQ1Njc4OQ=="


def write_flow(directory: Path, url: str) -> Path:
    directory.mkdir()
    (directory / "tell_crm.yaml").write_text(f"""
name: tell_crm
description: Tells the CRM about a shipped order.
trigger:
  event: order.shipped
purpose: transactional
steps:
  - webhook:
      url: {url}
      body: {{status: shipped}}
""", encoding="utf-8")
    return directory


def delivery_rows(database_url: str) -> list[dict[str, object]]:
    engine = db.make_engine(database_url)
    try:
        with engine.connect() as conn:
            return [dict(row) for row in conn.execute(select(orm.webhook_deliveries)).mappings()]
    finally:
        engine.dispose()


def test_a_held_flow_webhook_delays_no_stop_and_is_delivered_on_retry(tmp_path: Path) -> None:
    with FakeWebhookReceiver(SECRET, statuses=[500], hold_first=True) as receiver:
        server = _start(tmp_path, extra_env={
            "OPTFLOW_FLOWS_DIR": str(write_flow(tmp_path / "flows", receiver.url)),
            "OPTFLOW_WEBHOOK_SECRET": SECRET, "OPTFLOW_WEBHOOK_RETRY_BASE_SECONDS": "0.2"})
        try:
            with server.client("agent") as agent:
                contact = agent.post(f"{API}/contacts", json={"name": "Pat", "phones": [fresh_number()]})
                enrolled = agent.post(f"{API}/contacts/{contact.json()['id']}/enrollments", json={"flow": "tell_crm"})
            assert enrolled.status_code == 201, enrolled.text
            assert receiver.arrived.wait(timeout=60), "the scheduler never posted the webhook"

            customer = fresh_number()
            [confirmation] = twiml_messages(server.sms(customer, "STOP"))
            # Answered while the receiver still holds the webhook's request open.
            assert receiver.received == [] and not receiver.release.is_set()
            assert "START" in confirmation

            receiver.release.set()  # the receiver now answers that request with a 500
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(
                    row["status"] == "delivered" for row in delivery_rows(server.database_url)):
                time.sleep(0.2)
            [row] = delivery_rows(server.database_url)
        finally:
            _stop(server.process)
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 2, 200)
    assert [r.answered for r in receiver.received] == [500, 200]
    assert all(r.signature_valid for r in receiver.received)
    assert len({r.webhook_id for r in receiver.received}) == 1  # one delivery, retried
    assert receiver.received[-1].json()["status"] == "shipped"
