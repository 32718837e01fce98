"""Consent events out through the real server (issue 12, item 1): an admin registers the CRM's
endpoint through the API; consent changes made through the API and the Twilio webhook reach a
receiver on 127.0.0.1 that verifies every request with the `standardwebhooks` library and fails
each event's first two tries; the scheduler retries them, a contact's events in the ledger's
order; the delivery log and a redelivery go through the API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e.conftest import Server, _start, _stop, fresh_number
from e2e.helpers import API, error_code
from fakes.event_receiver import EventReceiver

pytestmark = pytest.mark.e2e


def wait_for(condition: Any, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def deliveries(admin: httpx.Client, endpoint_id: int) -> list[dict[str, Any]]:
    answer = admin.get(f"{API}/event-endpoints/{endpoint_id}/deliveries")
    assert answer.status_code == 200, answer.text
    return list(reversed(answer.json()["deliveries"]))  # oldest first


def make_changes(server: Server) -> tuple[int, int]:
    """Two contacts; for the first: an opt-in, DND on calls, marketing off, then a STOP by text."""
    sam_phone = fresh_number()
    with server.client("agent") as agent:
        sam = agent.post(f"{API}/contacts", json={"name": "Sam", "phones": [sam_phone]}).json()["id"]
        kim = agent.post(f"{API}/contacts", json={"name": "Kim", "phones": [fresh_number()]}).json()["id"]
        for answer in (
            agent.post(f"{API}/contacts/{sam}/opt-ins", json={"channel": "text", "method": "web_form",
                                                              "evidence": "form 17"}),
            agent.post(f"{API}/contacts/{kim}/opt-ins", json={"channel": "text", "method": "verbal"}),
            agent.put(f"{API}/contacts/{sam}/dnd", json={"on": True, "channels": ["call"]}),
            agent.put(f"{API}/contacts/{sam}/marketing", json={"allowed": False}),
        ):
            assert answer.status_code == 200, answer.text
    assert server.sms(sam_phone, "STOP").status_code == 200
    return sam, kim


def test_consent_events_reach_a_crm_signed_retried_in_order_and_redelivered(tmp_path: Path) -> None:
    with EventReceiver(failures=2) as receiver:
        server = _start(tmp_path, extra_env={"OPTFLOW_WEBHOOK_RETRY_BASE_SECONDS": "0.2"})
        try:
            with server.client("admin") as admin, server.client("agent") as agent:
                assert agent.post(f"{API}/event-endpoints", json={
                    "url": receiver.url, "event_types": ["consent.changed"]}).status_code == 403
                created = admin.post(f"{API}/event-endpoints", json={
                    "url": receiver.url, "event_types": ["consent.changed", "dnd.changed", "marketing.changed"],
                    "description": "CRM"})
                assert created.status_code == 201, created.text
                endpoint = created.json()
                assert endpoint["secret"].startswith("whsec_")
                assert admin.get(f"{API}/event-endpoints/{endpoint['id']}/secret").json()["secret"] == \
                    endpoint["secret"]
                receiver.secret = endpoint["secret"]

                sam, kim = make_changes(server)
                with server.client("supervisor") as supervisor:
                    ledger = supervisor.get(f"{API}/contacts/{sam}/ledger").json()
                wait_for(lambda: len(receiver.delivered()) == 5, "five events delivered")
                logs = deliveries(admin, endpoint["id"])

                # Redelivery of a delivered event: the same event again, same webhook-id.
                first = logs[0]
                again = admin.post(f"{API}/event-deliveries/{first['id']}/redeliver")
                assert again.status_code == 202, again.text
                wait_for(lambda: len(receiver.delivered()) == 6, "the redelivered event")
                assert admin.post(f"{API}/event-deliveries/{logs[-1]['id'] + 100}/redeliver").status_code == 404
        finally:
            _stop(server.process)

    assert receiver.received and all(event.verified for event in receiver.received), [
        event.error for event in receiver.received]
    assert len(receiver.received) == 5 * 3 + 1  # the redelivery was accepted at once
    # Every event: two 500s then accepted, and a contact's events tried strictly in ledger order.
    for contact in (sam, kim):
        tried = [(event.json()["data"]["ledger_seq"], event.answered) for event in receiver.received[:15]
                 if event.json()["data"]["contact"]["id"] == contact]
        seqs = sorted({seq for seq, _ in tried})
        assert tried == [(seq, status) for seq in seqs for status in (500, 500, 200)]
    sam_events = [event.json() for event in receiver.delivered()[:5] if event.json()["data"]["contact"]["id"] == sam]
    assert [event["type"] for event in sam_events] == [
        "consent.changed", "dnd.changed", "marketing.changed", "consent.changed"]
    assert [event["data"]["ledger_seq"] for event in sam_events] == [entry["seq"] for entry in ledger["entries"]]
    assert sam_events[-1]["data"]["to_state"] == "opted_out"
    assert sam_events[-1]["data"]["actor"]["kind"] == "customer"
    assert sam_events[0]["data"]["evidence"] == "form 17"

    assert [d["status"] for d in logs] == ["delivered"] * 5
    assert [[a["status_code"] for a in d["attempts"]] for d in logs] == [[500, 500, 200]] * 5
    assert all(a["error"] == "HTTP 500" for d in logs for a in d["attempts"][:2])
    redelivered = receiver.delivered()[-1]
    assert (redelivered.webhook_id, redelivered.json()) == (first["event_id"], first["payload"])


def test_event_endpoint_routes_refuse_bad_input_pause_rotate_and_remove(
        server: Server, admin_client: httpx.Client, agent: httpx.Client) -> None:
    url = f"{API}/event-endpoints"
    for body, code in (
        ({"url": "ftp://crm.example/x", "event_types": ["consent.changed"]}, "invalid_url"),
        ({"url": "https://crm.example/\x00", "event_types": ["consent.changed"]}, "invalid_url"),
        ({"url": "http://[::1/crm", "event_types": ["consent.changed"]}, "invalid_url"),
        ({"url": "https://crm.example/x", "event_types": ["lead.created"]}, "invalid_input"),
        ({"url": "https://crm.example/x", "event_types": []}, "invalid_input"),
        ({"url": "https://crm.example/x", "event_types": ["consent.changed"], "secret": "mine"}, "invalid_input"),
    ):
        refused = admin_client.post(url, json=body)
        assert (refused.status_code, error_code(refused)) == (422, code), refused.text
    closed_port = "http://127.0.0.1:9/crm"  # nothing listens: nothing reaches anyone from this test
    endpoint = admin_client.post(url, json={"url": closed_port, "event_types": ["marketing.changed"],
                                            "description": "odd \x00 text"}).json()
    assert endpoint["description"] == "odd \ufffd text"  # stored as text can be
    path = f"{url}/{endpoint['id']}"
    try:
        assert endpoint["id"] in [e["id"] for e in admin_client.get(url).json()["endpoints"]]
        assert admin_client.get(f"{path}/deliveries", params={"status": "lost"}).status_code == 422
        assert admin_client.get(f"{path}/deliveries", params={"limit": "x"}).status_code == 400
        assert admin_client.get(f"{url}/{endpoint['id'] + 1000}/deliveries").status_code == 404
        assert agent.get(url).status_code == 403

        paused = admin_client.patch(path, json={"active": False})
        assert (paused.status_code, paused.json()["active"]) == (200, False)
        contact = agent.post(f"{API}/contacts", json={"name": "Lee", "phones": [fresh_number()]}).json()["id"]
        assert agent.put(f"{API}/contacts/{contact}/marketing", json={"allowed": False}).status_code == 200
        assert admin_client.get(f"{path}/deliveries").json()["deliveries"] == []  # paused: nothing queued
        assert admin_client.patch(path, json={"active": True}).json()["active"] is True
        assert agent.put(f"{API}/contacts/{contact}/marketing", json={"allowed": True}).status_code == 200
        [queued] = admin_client.get(f"{path}/deliveries").json()["deliveries"]
        assert (queued["event_type"], queued["payload"]["data"]["marketing_allowed"]) == ("marketing.changed", True)
        # Nothing listens there, so it is being retried: a redelivery would only be a copy.
        redeliver_pending = admin_client.post(f"{API}/event-deliveries/{queued['id']}/redeliver")
        assert (redeliver_pending.status_code, error_code(redeliver_pending)) == (409, "delivery_pending")

        old_secret = admin_client.get(f"{path}/secret").json()["secret"]
        rotated = admin_client.post(f"{path}/rotate-secret").json()["secret"]
        assert rotated.startswith("whsec_") and rotated != old_secret
        assert admin_client.get(f"{path}/secret").json()["secret"] == rotated
    finally:
        removed = admin_client.delete(path)
    assert removed.status_code == 200, removed.text
    assert endpoint["id"] not in [e["id"] for e in admin_client.get(url).json()["endpoints"]]
    assert admin_client.get(f"{path}/secret").status_code == 404
    [failed] = admin_client.get(f"{path}/deliveries").json()["deliveries"]  # the log stays
    assert (failed["status"], failed["last_error"]) == ("failed", "the endpoint was removed")
    assert admin_client.delete(path).status_code == 404
