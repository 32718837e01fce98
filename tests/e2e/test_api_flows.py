"""Whole conversations through the REST API and the SMS webhook of the running server: what an
agent, a supervisor, a customer and the shipped flows do together."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from e2e.helpers import API, ApiOrg, api_org, error_code, twiml_messages

if TYPE_CHECKING:
    from e2e.conftest import Library, Server

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pin_org(server: Server, library: Library) -> ApiOrg:
    """An org that asks for a PIN after YES (a setting the shared org must not change)."""
    return api_org(server, library, pin_required=True)


def create_contact(client: httpx.Client, phone: str, **fields: Any) -> dict[str, Any]:
    response = client.post(f"{API}/contacts", json={"name": "Alex Kim", "phones": [phone], **fields})
    assert response.status_code == 201, response.text
    return dict(response.json())


def contact(client: httpx.Client, contact_id: int) -> dict[str, Any]:
    response = client.get(f"{API}/contacts/{contact_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def consent(client: httpx.Client, contact_id: int, channel: str) -> dict[str, Any]:
    [found] = [k for k in contact(client, contact_id)["consents"] if k["channel"] == channel]
    return dict(found)


def ledger(client: httpx.Client, contact_id: int) -> list[dict[str, Any]]:
    response = client.get(f"{API}/contacts/{contact_id}/ledger")
    assert response.status_code == 200, response.text
    return list(response.json()["entries"])


def messages(client: httpx.Client, contact_id: int, **where: str) -> list[dict[str, Any]]:
    response = client.get(f"{API}/contacts/{contact_id}/messages")
    assert response.status_code == 200, response.text
    return [m for m in response.json()["messages"] if all(m[k] == v for k, v in where.items())]


def act(client: httpx.Client, contact_id: int, action: str, body: dict[str, Any], method: str = "POST") -> Any:
    response = client.request(method, f"{API}/contacts/{contact_id}/{action}", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def send(client: httpx.Client, contact_id: int, channel: str) -> httpx.Response:
    return client.post(f"{API}/messages", json={"contact_id": contact_id, "channel": channel,
                                                 "body": "Your appointment is confirmed for Monday."})


def event(client: httpx.Client, contact_id: int, name: str, **data: Any) -> dict[str, Any]:
    response = client.post(f"{API}/events", json={"name": name, "contact_id": contact_id, "data": data})
    assert response.status_code == 202, response.text
    return dict(response.json())


def when(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# ------------------------------------------------------------------------------------- opt-in


def test_an_agent_asks_and_the_customer_replies_yes(server: Server, agent: httpx.Client, number: str) -> None:
    alex = create_contact(agent, number)
    asked = act(agent, alex["id"], "opt-in-request", {"channel": "text"})
    assert (asked["status"], asked["state"]) == ("requested", "requested")
    [request] = messages(agent, alex["id"], kind="opt_in_request")
    assert (request["audience"], request["address"], request["direction"]) == ("customer", number, "out")
    assert messages(agent, alex["id"], audience="employee")  # the agent is told the request went out

    answer = twiml_messages(server.sms(number, "Yes"))
    assert len(answer) == 1

    text = consent(agent, alex["id"], "text")
    assert (text["state"], text["method"]) == ("opted_in", "keyword")
    assert consent(agent, alex["id"], "call")["state"] == "unknown"  # YES by text is consent to text only
    entries = ledger(agent, alex["id"])
    assert [(e["trigger"], e["to_state"], e["actor_kind"]) for e in entries] == [
        ("request_opt_in", "requested", "agent"), ("accept", "opted_in", "customer")]


def test_quick_opt_in_lets_yes_skip_the_pin(pin_org: ApiOrg, library: Library) -> None:
    with pin_org.client() as client:
        usual = create_contact(client, library.new_number())
        quick = create_contact(client, library.new_number())
        act(client, usual["id"], "opt-in-request", {"channel": "text"})
        act(client, quick["id"], "quick-opt-in", {"channel": "text"})
        usual_answer = twiml_messages(pin_org.sms(usual["addresses"][0]["value"], "YES"))
        quick_answer = twiml_messages(pin_org.sms(quick["addresses"][0]["value"], "YES"))
        usual_text, quick_text = consent(client, usual["id"], "text"), consent(client, quick["id"], "text")
    assert (usual_text["state"], usual_text["awaiting_pin"]) == ("requested", True)
    assert re.search(r"\b\d{6}\b", usual_answer[0])
    assert (quick_text["state"], quick_text["awaiting_pin"]) == ("opted_in", False)
    assert not re.search(r"\b\d{6}\b", quick_answer[0])


def test_a_manual_opt_in_keeps_when_it_happened_and_when_it_was_recorded(agent: httpx.Client,
                                                                        number: str) -> None:
    alex = create_contact(agent, number)
    last_week = (datetime.now(UTC) - timedelta(days=7)).replace(hour=14, minute=30, second=0, microsecond=0)
    result = act(agent, alex["id"], "opt-ins", {"channel": "text", "method": "paper_form",
                                                "occurred_at": last_week.isoformat(),
                                                "evidence": "signed credit application, page 3"})
    assert result["state"] == "opted_in"
    text = consent(agent, alex["id"], "text")
    assert (text["method"], when(text["opted_in_at"])) == ("paper_form", last_week)
    [entry] = ledger(agent, alex["id"])
    assert (entry["trigger"], entry["method"], entry["evidence"]) == (
        "record_opt_in", "paper_form", "signed credit application, page 3")
    assert when(entry["occurred_at"]) == last_week
    assert abs(when(entry["recorded_at"]) - datetime.now(UTC)) < timedelta(minutes=1)


def test_a_wrong_pin_is_refused_and_the_right_one_opts_in(pin_org: ApiOrg, library: Library) -> None:
    number = library.new_number()
    with pin_org.client() as client:
        alex = create_contact(client, number)
        act(client, alex["id"], "opt-in-request", {"channel": "text"})
        [answer] = twiml_messages(pin_org.sms(number, "YES"))
        match = re.search(r"\b(\d{6})\b", answer)
        assert match, answer
        pin = match.group(1)
        wrong = f"{(int(pin) + 1) % 10**6:06d}"

        refused = client.post(f"{API}/contacts/{alex['id']}/pin-confirmation", json={"channel": "text", "pin": wrong})
        assert refused.status_code == 409
        assert error_code(refused) == "pin_wrong"
        assert "attempts left" in refused.json()["error"]["message"]
        assert consent(client, alex["id"], "text")["state"] == "requested"

        accepted = act(client, alex["id"], "pin-confirmation", {"channel": "text", "pin": pin})
        assert accepted["state"] == "opted_in"
        entries = ledger(client, alex["id"])
    assert [(e["trigger"], e["to_state"]) for e in entries] == [
        ("request_opt_in", "requested"), ("accept", "requested"), ("confirm_pin", "opted_in")]
    assert (entries[-1]["actor_kind"], entries[-1]["method"]) == ("agent", "pin")


# ------------------------------------------------------------------------------------- business events


def test_a_payment_plan_asks_for_consent_only_when_there_is_none(library: Library, agent: httpx.Client) -> None:
    unknown = create_contact(agent, library.new_number())
    opted_in = create_contact(agent, library.new_number())
    act(agent, opted_in["id"], "opt-ins", {"channel": "text", "method": "verbal"})

    asked = event(agent, unknown["id"], "payment_plan.created", plan="PP-1")
    not_asked = event(agent, opted_in["id"], "payment_plan.created", plan="PP-2")

    [run] = asked["enrollments"]
    assert (run["flow"], run["status"]) == ("payment_plan_opt_in", "active")  # waiting to remind in 2 days
    assert any(step["outcome"] == "opt-in request queued" for step in run["steps"])
    assert consent(agent, unknown["id"], "text")["state"] == "requested"
    assert len(messages(agent, unknown["id"], kind="opt_in_request")) == 1

    [done] = not_asked["enrollments"]
    assert (done["flow"], done["status"]) == ("payment_plan_opt_in", "done")
    assert consent(agent, opted_in["id"], "text")["state"] == "opted_in"
    assert messages(agent, opted_in["id"], kind="opt_in_request") == []


def test_a_discontinued_stage_opts_the_contact_out_everywhere(library: Library, agent: httpx.Client) -> None:
    alex = create_contact(agent, library.new_number(), emails=["alex.kim@example.net"])
    act(agent, alex["id"], "opt-ins", {"channel": "text", "method": "verbal"})
    act(agent, alex["id"], "opt-ins", {"channel": "email", "method": "web_form"})
    drip = event(agent, alex["id"], "lead.created")["enrollments"]
    assert [e["status"] for e in drip] == ["active"]

    assert event(agent, alex["id"], "pipeline.stage_changed", stage="negotiation")["enrollments"] == []
    assert {k["state"] for k in contact(agent, alex["id"])["consents"]} == {"opted_in", "unknown"}

    result = event(agent, alex["id"], "pipeline.stage_changed", stage="discontinued")
    assert [e["flow"] for e in result["enrollments"]] == ["discontinued"]

    after = contact(agent, alex["id"])
    assert {(k["channel"], k["state"]) for k in after["consents"]} == {
        ("text", "opted_out"), ("call", "opted_out"), ("whatsapp", "opted_out"), ("email", "opted_out")}
    assert after["do_not_call"] is True
    assert after["dnd"]["all_channels"] is True
    enrollments = agent.get(f"{API}/contacts/{alex['id']}/enrollments").json()["enrollments"]
    assert {e["status"] for e in enrollments if e["flow"] == "welcome_drip"} == {"cancelled"}
    for channel in ("text", "email"):
        refused = send(agent, alex["id"], channel)
        assert refused.status_code == 409 and error_code(refused) == "opted_out"


# ------------------------------------------------------------------------------------- unassociated


def test_a_supervisor_links_a_number_nobody_knew(server: Server, library: Library, supervisor: httpx.Client) -> None:
    stranger = library.new_number()
    assert twiml_messages(server.sms(stranger, "Hi, is my car ready?")) == []
    waiting = supervisor.get(f"{API}/unassociated").json()["messages"]
    [message] = [m for m in waiting if m["address"] == stranger]
    assert (message["body"], message["status"], message["contact_id"]) == ("Hi, is my car ready?", "unassociated",
                                                                          None)

    jordan = supervisor.post(f"{API}/contacts", json={"name": "Jordan Reyes"}).json()
    linked = supervisor.post(f"{API}/unassociated/{message['id']}/link", json={"contact_id": jordan["id"]})
    assert linked.status_code == 200, linked.text
    result = linked.json()
    assert (result["status"], result["channel"], result["state"]) == ("linked", "text", "requested")
    assert [a["value"] for a in result["contact"]["addresses"]] == [stranger]

    assert all(m["address"] != stranger for m in supervisor.get(f"{API}/unassociated").json()["messages"])
    history = messages(supervisor, jordan["id"])
    assert {(m["direction"], m["kind"]) for m in history if m["audience"] == "customer"} >= {
        ("in", "normal"), ("out", "opt_in_request")}
    again = supervisor.post(f"{API}/unassociated/{message['id']}/link", json={"contact_id": jordan["id"]})
    assert again.status_code == 409 and error_code(again) == "not_unassociated"


# ------------------------------------------------------------------------------------- STOP and DND


def test_stop_on_text_leaves_the_email_consent_alone(server: Server, agent: httpx.Client, number: str) -> None:
    alex = create_contact(agent, number, emails=["alex@example.org"])
    act(agent, alex["id"], "opt-ins", {"channel": "text", "method": "verbal"})
    act(agent, alex["id"], "opt-ins", {"channel": "email", "method": "web_form"})

    assert len(twiml_messages(server.sms(number, "STOP"))) == 1

    assert consent(agent, alex["id"], "text")["state"] == "opted_out"
    assert consent(agent, alex["id"], "email")["state"] == "opted_in"
    refused = send(agent, alex["id"], "text")
    assert refused.status_code == 409 and error_code(refused) == "opted_out"
    accepted = send(agent, alex["id"], "email")
    assert accepted.status_code == 202 and accepted.json()["status"] == "queued"


def test_after_a_customers_stop_no_agent_request_reopens_it(server: Server, agent: httpx.Client,
                                                            supervisor: httpx.Client, number: str) -> None:
    """Issue 10, hole 4, as the probe did it over HTTP: after the customer's STOP, an agent's
    paper-form opt-in dated a month before the STOP answered 200 `opted_in` and the next message
    queued; so did a reset followed by an opt-in or an opt-in request."""
    alex = create_contact(agent, number)
    act(agent, alex["id"], "opt-ins", {"channel": "text", "method": "verbal"})
    assert len(twiml_messages(server.sms(number, "STOP"))) == 1
    month_before = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    paper_form = {"channel": "text", "method": "paper_form", "occurred_at": month_before, "evidence": "form #7"}

    for client in (agent, supervisor):  # consent given before the STOP does not outlive it
        refused = client.post(f"{API}/contacts/{alex['id']}/opt-ins", json=paper_form)
        assert refused.status_code == 409, refused.text
        assert error_code(refused) == ("opted_out" if client is agent else "consent_before_opt_out")
    reset = agent.post(f"{API}/contacts/{alex['id']}/reset", json={"channel": "text", "evidence": "reassigned"})
    assert reset.status_code == 403 and error_code(reset) == "forbidden"
    unexplained = supervisor.post(f"{API}/contacts/{alex['id']}/reset", json={"channel": "text"})
    assert unexplained.status_code == 422 and error_code(unexplained) == "reason_required", unexplained.text
    for action, body in (("opt-ins", {"channel": "text", "method": "verbal"}), ("opt-in-request", {"channel": "text"}),
                         ("quick-opt-in", {"channel": "text"})):
        refused = agent.post(f"{API}/contacts/{alex['id']}/{action}", json=body)
        assert refused.status_code == 409 and error_code(refused) == "opted_out", (action, refused.text)

    assert consent(agent, alex["id"], "text")["state"] == "opted_out"
    refused = send(agent, alex["id"], "text")
    assert refused.status_code == 409 and error_code(refused) == "opted_out"
    assert messages(agent, alex["id"], direction="out", status="queued") == []


def test_dnd_on_every_channel_blocks_every_channel(agent: httpx.Client, number: str) -> None:
    alex = create_contact(agent, number, emails=["alex.dnd@example.org"])
    act(agent, alex["id"], "opt-ins", {"channel": "text", "method": "verbal"})
    act(agent, alex["id"], "opt-ins", {"channel": "email", "method": "web_form"})

    quiet = act(agent, alex["id"], "dnd", {"on": True, "all_channels": True}, method="PUT")
    assert quiet["contact"]["dnd"] == {"all_channels": True, "channels": []}
    for channel in ("text", "email"):
        refused = send(agent, alex["id"], channel)
        assert refused.status_code == 409, refused.text
        assert error_code(refused) == "dnd"
    assert {k["state"] for k in contact(agent, alex["id"])["consents"] if k["channel"] in ("text", "email")} == {
        "opted_in"}  # DND leaves consent alone
    assert ledger(agent, alex["id"])[-1]["trigger"] == "dnd_on"

    act(agent, alex["id"], "dnd", {"on": False, "all_channels": True}, method="PUT")
    assert send(agent, alex["id"], "text").status_code == 202


# ------------------------------------------------------------------------------------- re-authorisation


def test_text_reauth_restarts_the_consent_clock(server: Server, agent: httpx.Client, number: str) -> None:
    alex = create_contact(agent, number)
    long_ago = (datetime.now(UTC) - timedelta(days=400)).replace(microsecond=0)
    act(agent, alex["id"], "opt-ins", {"channel": "text", "method": "verbal", "occurred_at": long_ago.isoformat()})
    assert when(consent(agent, alex["id"], "text")["opted_in_at"]) == long_ago

    asked = act(agent, alex["id"], "reauth-request", {"channel": "text"})
    assert asked["status"] == "reauth_requested"
    [request] = messages(agent, alex["id"], kind="opt_in_request")
    assert request["id"] == asked["message_id"]

    twiml_messages(server.sms(number, "YES"))

    text = consent(agent, alex["id"], "text")
    assert text["state"] == "opted_in"
    assert abs(when(text["opted_in_at"]) - datetime.now(UTC)) < timedelta(minutes=1)
    last = ledger(agent, alex["id"])[-1]
    assert (last["trigger"], last["actor_kind"], last["from_state"], last["to_state"]) == (
        "reauthorize", "customer", "opted_in", "opted_in")


def test_text_reauth_needs_an_existing_consent(agent: httpx.Client, number: str) -> None:
    alex = create_contact(agent, number)
    response = agent.post(f"{API}/contacts/{alex['id']}/reauth-request", json={"channel": "text"})
    assert response.status_code == 409
    assert error_code(response) == "invalid_transition"
