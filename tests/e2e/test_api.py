"""The REST API of the running server, over HTTP: authentication and roles, every kind of bad input
(and the status it gets), org scoping, settings, reports and the OpenAPI document."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from e2e.helpers import API, api_org, error_code, twiml_messages

if TYPE_CHECKING:
    from e2e.conftest import Library, Server

pytestmark = pytest.mark.e2e

NewContact = Callable[..., dict[str, Any]]


@pytest.fixture
def new_contact(library: Library) -> NewContact:
    """Creates a contact through `client` with a fresh phone number (and `fields`), returns it."""

    def create(client: httpx.Client, **fields: Any) -> dict[str, Any]:
        body = {"name": "Sam Lee", "phones": [library.new_number()], **fields}
        response = client.post(f"{API}/contacts", json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    return create


def consent_of(contact: dict[str, Any], channel: str) -> dict[str, Any]:
    [consent] = [k for k in contact["consents"] if k["channel"] == channel]
    return dict(consent)


# ------------------------------------------------------------------------------------- authentication


@pytest.mark.parametrize("headers", [
    pytest.param({}, id="no-header"),
    pytest.param({"Authorization": "Basic dXNlcjpwYXNz"}, id="wrong-scheme"),
    pytest.param({"Authorization": "Bearer of_not-a-real-token"}, id="unknown-token"),
    pytest.param({"Authorization": "Bearer"}, id="no-token"),
])
@pytest.mark.parametrize(("method", "path"), [("GET", "/contacts"), ("POST", "/contacts"), ("GET", "/settings")])
def test_no_valid_token_is_401_before_anything_else(server: Server, headers: dict[str, str], method: str,
                                                    path: str) -> None:
    with httpx.Client(base_url=server.base_url, timeout=15) as client:
        response = client.request(method, API + path, headers=headers, content=b"{not json")
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"


ROLE_MATRIX = [
    ("agent", "GET", "/contacts", 200),
    ("agent", "GET", "/unassociated", 403),
    ("agent", "GET", "/reports/consent", 403),
    ("agent", "GET", "/settings", 403),
    ("agent", "PATCH", "/settings", 403),
    ("supervisor", "GET", "/unassociated", 200),
    ("supervisor", "GET", "/reports/consent", 200),
    ("supervisor", "GET", "/settings", 403),
    ("supervisor", "PATCH", "/settings", 403),
    ("admin", "GET", "/unassociated", 200),
    ("admin", "GET", "/reports/consent", 200),
    ("admin", "GET", "/settings", 200),
    ("admin", "GET", "/contacts", 200),
]


@pytest.mark.parametrize(("role", "method", "path", "status"), ROLE_MATRIX,
                         ids=[f"{r}-{m}-{p}" for r, m, p, _ in ROLE_MATRIX])
def test_each_role_may_do_what_its_rank_allows(server: Server, role: str, method: str, path: str,
                                               status: int) -> None:
    # The PATCH body changes nothing, so an admin running it would leave the shared org alone.
    with server.client(role) as client:
        response = client.request(method, API + path, json={} if method == "PATCH" else None)
    assert response.status_code == status, response.text
    if status == 403:
        assert error_code(response) == "forbidden"
        assert role in response.json()["error"]["message"]


def test_a_supervisor_may_link_but_an_agent_may_not(server: Server) -> None:
    with server.client("agent") as client:
        response = client.post(f"{API}/unassociated/1/link", json={"contact_id": 1})
    assert response.status_code == 403


# ------------------------------------------------------------------------------------- contacts


def test_a_new_contact_is_stored_normalised_with_every_channel_unknown(
        agent: httpx.Client, new_contact: NewContact, library: Library) -> None:
    number = library.new_number()
    national = f"({number[2:5]}) {number[5:8]}-{number[8:]}"
    created = new_contact(agent, phones=[national], emails=["Sam.Lee@Example.COM"], time_zone="America/Chicago",
                          region="tx", fields={"account": "A-17"}, marketing_allowed=False)
    assert created["addresses"] == [{"kind": "phone", "value": number, "active": False, "do_not_call": False},
                                    {"kind": "email", "value": "sam.lee@example.com", "active": None,
                                     "do_not_call": None}]
    assert {(k["channel"], k["state"]) for k in created["consents"]} == {
        ("text", "unknown"), ("call", "unknown"), ("whatsapp", "unknown"), ("email", "unknown")}
    assert (created["time_zone"], created["region"]) == ("America/Chicago", "TX")
    assert created["fields"] == {"account": "A-17"}
    assert (created["active"], created["do_not_call"], created["marketing_allowed"]) == (False, False, False)
    assert created["dnd"] == {"all_channels": False, "channels": []}
    fetched = agent.get(f"{API}/contacts/{created['id']}")
    assert fetched.status_code == 200 and fetched.json() == created


def test_a_new_contact_says_where_it_lives(agent: httpx.Client, library: Library) -> None:
    response = agent.post(f"{API}/contacts", json={"phones": [library.new_number()]})
    assert response.status_code == 201
    assert agent.get(response.headers["location"]).json() == response.json()


def test_search_by_name_pages(agent: httpx.Client, new_contact: NewContact, library: Library) -> None:
    name = f"Pager {library.new_number()}"
    first, second = new_contact(agent, name=name), new_contact(agent, name=name)
    pages = [agent.get(f"{API}/contacts", params={"name": name.lower(), "limit": 1, "offset": offset}).json()
             for offset in (0, 1, 2)]
    assert [[c["id"] for c in page["contacts"]] for page in pages] == [[first["id"]], [second["id"]], []]


def test_search_normalises_the_phone_number_and_the_email_first(
        agent: httpx.Client, new_contact: NewContact, library: Library) -> None:
    number = library.new_number()
    created = new_contact(agent, phones=[number], emails=["robin@example.org"])
    national = f"{number[2:5]}.{number[5:8]}.{number[8:]}"
    queries = ({"phone": national}, {"email": "ROBIN@EXAMPLE.ORG"}, {"phone": national, "email": "robin@example.org"})
    for query in queries:
        response = agent.get(f"{API}/contacts", params=query)
        assert response.status_code == 200
        assert [c["id"] for c in response.json()["contacts"]] == [created["id"]], query
    assert agent.get(f"{API}/contacts", params={"phone": library.new_number()}).json()["contacts"] == []


def test_patch_changes_only_what_it_names(agent: httpx.Client, new_contact: NewContact, library: Library) -> None:
    created = new_contact(agent, time_zone="America/Denver", region="CO", fields={"vin": "1HGCM82633A004352"})
    extra = library.new_number()
    response = agent.patch(f"{API}/contacts/{created['id']}",
                           json={"name": "Sam Q. Lee", "region": None, "fields": None, "add_phones": [extra]})
    assert response.status_code == 200, response.text
    patched = response.json()
    assert (patched["name"], patched["time_zone"], patched["region"]) == ("Sam Q. Lee", "America/Denver", None)
    assert patched["fields"] == {}
    assert [a["value"] for a in patched["addresses"]] == [created["addresses"][0]["value"], extra]


def test_an_address_of_another_contact_is_a_409(agent: httpx.Client, new_contact: NewContact) -> None:
    first = new_contact(agent)
    response = agent.post(f"{API}/contacts", json={"phones": [first["addresses"][0]["value"]]})
    assert response.status_code == 409
    assert error_code(response) == "address_taken"


def test_contacts_of_another_org_do_not_exist_for_the_caller(server: Server, library: Library,
                                                             agent: httpx.Client, new_contact: NewContact) -> None:
    ours = new_contact(agent)
    other = api_org(server, library)
    with other.client("admin") as client:
        assert client.get(f"{API}/contacts/{ours['id']}").status_code == 404
        assert client.post(f"{API}/contacts/{ours['id']}/opt-out", json={"channel": "text"}).status_code == 404
        assert client.post(f"{API}/messages", json={"contact_id": ours["id"], "channel": "text",
                                                    "body": "hi"}).status_code == 404
        found = client.get(f"{API}/contacts", params={"phone": ours["addresses"][0]["value"]})
        assert found.status_code == 200 and found.json()["contacts"] == []
    assert consent_of(agent.get(f"{API}/contacts/{ours['id']}").json(), "text")["state"] == "unknown"


# ------------------------------------------------------------------------------------- bad input


def test_malformed_json_is_a_400(agent: httpx.Client, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    response = agent.post(f"{API}/contacts/{contact['id']}/opt-in-request", content=b'{"channel": "text"',
                          headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert error_code(response) == "bad_request"


@pytest.mark.parametrize("body", [
    pytest.param({"channel": 5}, id="number-for-channel"),
    pytest.param({"channel": "text", "quick": "yes"}, id="string-for-boolean"),
    pytest.param({"channel": ["text"]}, id="list-for-channel"),
    pytest.param(["text"], id="array-body"),
    pytest.param("text", id="string-body"),
])
def test_a_value_of_the_wrong_json_type_is_a_400(agent: httpx.Client, body: Any, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    response = agent.post(f"{API}/contacts/{contact['id']}/opt-in-request", json=body)
    assert response.status_code == 400, response.text
    assert error_code(response) == "bad_request"
    assert consent_of(agent.get(f"{API}/contacts/{contact['id']}").json(), "text")["state"] == "unknown"


def test_a_missing_body_is_a_400(agent: httpx.Client, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    response = agent.post(f"{API}/contacts/{contact['id']}/opt-in-request")
    assert response.status_code == 400
    assert error_code(response) == "body_required"


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
def test_a_body_that_is_not_json_is_a_415(
        agent: httpx.Client, content_type: str | None, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    headers = {"Content-Type": content_type} if content_type else {}
    response = agent.post(f"{API}/contacts/{contact['id']}/opt-in-request", content=b"channel=text", headers=headers)
    assert response.status_code == 415
    assert error_code(response) == "unsupported_media_type"


def test_a_body_over_the_limit_is_a_413(agent: httpx.Client) -> None:
    response = agent.post(f"{API}/contacts", json={"name": "x" * 70_000})
    assert response.status_code == 413
    assert error_code(response) == "payload_too_large"


@pytest.mark.parametrize(("path", "body", "code", "names"), [
    pytest.param("opt-in-request", {"channel": "fax"}, "invalid_input", "channel", id="unknown-channel"),
    pytest.param("opt-ins", {"channel": "text"}, "invalid_input", "method", id="missing-method"),
    pytest.param("opt-ins", {"channel": "text", "method": "carrier pigeon"}, "unknown_method", "carrier pigeon",
                 id="method-not-in-org-list"),
    pytest.param("opt-ins", {"channel": "text", "method": "verbal",
                             "occurred_at": (datetime.now(UTC) + timedelta(days=2)).isoformat()},
                 "occurred_in_future", "future", id="consent-in-the-future"),
    pytest.param("opt-in-request", {"channel": "text", "address": "not a number"}, "invalid_phone", "not a number",
                 id="unparseable-address"),
    pytest.param("opt-in-request", {"channel": "email"}, "no_address", "email", id="no-address-for-channel"),
    pytest.param("opt-in-request", {"channel": "text", "urgent": True}, "invalid_input", "urgent",
                 id="unknown-field"),
    pytest.param("opt-out", {}, "channel_required", "channel", id="opt-out-of-nothing"),
    pytest.param("dnd", {"on": True}, "channels_required", "channels", id="dnd-on-nothing"),
])
def test_json_the_rules_refuse_is_a_422_naming_the_problem(agent: httpx.Client, path: str, body: dict[str, Any],
                                                           code: str, names: str, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    method = "PUT" if path == "dnd" else "POST"
    response = agent.request(method, f"{API}/contacts/{contact['id']}/{path}", json=body)
    assert response.status_code == 422, response.text
    assert error_code(response) == code
    assert names in response.json()["error"]["message"]
    assert agent.get(f"{API}/contacts/{contact['id']}/ledger").json()["entries"] == []


@pytest.mark.parametrize(("body", "code"), [
    ({"phones": ["555-0100"]}, "invalid_phone"),
    ({"emails": ["no-at-sign"]}, "invalid_email"),
    ({"time_zone": "Mars/Olympus_Mons"}, "unknown_time_zone"),
    ({"region": "Texas"}, "invalid_input"),
])
def test_an_invalid_contact_is_a_422(agent: httpx.Client, body: dict[str, Any], code: str) -> None:
    response = agent.post(f"{API}/contacts", json=body)
    assert response.status_code == 422, response.text
    assert error_code(response) == code


@pytest.mark.parametrize("query", [{"phone": "banana"}, {"limit": "0"}, {"limit": "101"}])
def test_an_invalid_search_is_a_422(agent: httpx.Client, query: dict[str, str]) -> None:
    assert agent.get(f"{API}/contacts", params=query).status_code == 422


def test_a_search_limit_that_is_not_a_number_is_a_400(agent: httpx.Client) -> None:
    assert agent.get(f"{API}/contacts", params={"limit": "ten"}).status_code == 400


@pytest.mark.parametrize("contact_id", ["999999", "0", "9223372036854775807", "99999999999999999999999"])
def test_an_unknown_contact_is_a_404(agent: httpx.Client, contact_id: str) -> None:
    for response in (agent.get(f"{API}/contacts/{contact_id}"),
                     agent.post(f"{API}/contacts/{contact_id}/opt-out", json={"channel": "text"}),
                     agent.get(f"{API}/contacts/{contact_id}/ledger")):
        assert response.status_code == 404, response.text
        assert error_code(response).endswith("not_found")


def test_an_unknown_message_is_a_404_for_linking(server: Server, new_contact: NewContact) -> None:
    with server.client("supervisor") as client:
        contact = new_contact(client)
        response = client.post(f"{API}/unassociated/987654/link", json={"contact_id": contact["id"]})
    assert response.status_code == 404
    assert error_code(response) == "message_not_found"


def test_an_unsupported_method_is_a_405_with_allow(agent: httpx.Client, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    response = agent.delete(f"{API}/contacts/{contact['id']}")
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "PATCH"}
    assert "DELETE" not in response.headers["allow"]
    assert error_code(response) == "method_not_allowed"


# ------------------------------------------------------------------------------------- refusals


def test_an_agent_cannot_ask_an_opted_out_address_to_opt_in_again(agent: httpx.Client, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    assert agent.post(f"{API}/contacts/{contact['id']}/opt-out", json={"channel": "text"}).status_code == 200
    response = agent.post(f"{API}/contacts/{contact['id']}/opt-in-request", json={"channel": "text"})
    assert response.status_code == 409
    assert error_code(response) == "opted_out"
    assert "only the customer can reopen" in response.json()["error"]["message"]
    assert consent_of(agent.get(f"{API}/contacts/{contact['id']}").json(), "text")["state"] == "opted_out"


def test_an_opted_out_customer_can_reopen_by_texting_start(
        server: Server, agent: httpx.Client, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    number = contact["addresses"][0]["value"]
    agent.post(f"{API}/contacts/{contact['id']}/opt-out", json={"channel": "text"})
    assert server.sms(number, "START").status_code == 200
    assert consent_of(agent.get(f"{API}/contacts/{contact['id']}").json(), "text")["state"] == "opted_in"


def test_an_agent_message_in_consent_mode_is_held_until_yes(
        server: Server, agent: httpx.Client, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    response = agent.post(f"{API}/messages", json={"contact_id": contact["id"], "channel": "text",
                                                    "body": "Your car is ready"})
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "held"
    assert consent_of(agent.get(f"{API}/contacts/{contact['id']}").json(), "text")["state"] == "requested"
    server.sms(contact["addresses"][0]["value"], "YES")
    messages = agent.get(f"{API}/contacts/{contact['id']}/messages").json()["messages"]
    [held] = [m for m in messages if m["id"] == response.json()["message_id"]]
    assert held["status"] in ("queued", "sent")


# ------------------------------------------------------------------------------------- agent actions


def act(client: httpx.Client, contact: dict[str, Any], action: str, body: dict[str, Any],
        method: str = "POST") -> dict[str, Any]:
    response = client.request(method, f"{API}/contacts/{contact['id']}/{action}", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def send(client: httpx.Client, contact: dict[str, Any], channel: str,
         purpose: str = "conversational") -> httpx.Response:
    return client.post(f"{API}/messages", json={"contact_id": contact["id"], "channel": channel, "purpose": purpose,
                                                 "body": "Spring service specials this week."})


def test_reset_forgets_the_old_consent(agent: httpx.Client, supervisor: httpx.Client,
                                       new_contact: NewContact) -> None:
    contact = new_contact(agent)
    act(agent, contact, "opt-ins", {"channel": "text", "method": "verbal"})
    refused = agent.post(f"{API}/contacts/{contact['id']}/reset", json={"channel": "text", "evidence": "reassigned"})
    assert refused.status_code == 403, refused.text
    result = act(supervisor, contact, "reset",
                 {"channel": "text", "evidence": "carrier says the number was reassigned"})
    assert (result["status"], result["state"]) == ("reset", "unknown")
    text = consent_of(result["contact"], "text")
    assert (text["opted_in_at"], text["method"]) == (None, None)
    last = agent.get(f"{API}/contacts/{contact['id']}/ledger").json()["entries"][-1]
    assert (last["trigger"], last["evidence"]) == ("reset", "carrier says the number was reassigned")


def test_opting_out_of_every_channel(agent: httpx.Client, new_contact: NewContact) -> None:
    contact = new_contact(agent, emails=["every@example.com"])
    act(agent, contact, "opt-ins", {"channel": "call", "method": "verbal"})
    result = act(agent, contact, "opt-out", {"all_channels": True, "evidence": "asked on the phone"})
    assert (result["status"], result["channel"], result["state"]) == ("opted_out", None, None)
    assert {k["state"] for k in result["contact"]["consents"]} == {"opted_out"}
    assert len(result["contact"]["consents"]) == 4
    assert result["contact"]["do_not_call"] is True


def test_declined_marketing_blocks_marketing_but_not_conversations(agent: httpx.Client,
                                                                   new_contact: NewContact) -> None:
    contact = new_contact(agent)
    act(agent, contact, "opt-ins", {"channel": "text", "method": "verbal"})
    assert act(agent, contact, "marketing", {"allowed": False}, method="PUT")["contact"]["marketing_allowed"] is False
    refused = send(agent, contact, "text", purpose="marketing")
    assert refused.status_code == 409 and error_code(refused) == "marketing_declined"
    assert send(agent, contact, "text").status_code == 202
    act(agent, contact, "marketing", {"allowed": True}, method="PUT")
    assert send(agent, contact, "text", purpose="marketing").status_code == 202


def test_dnd_on_one_channel_blocks_only_that_channel(agent: httpx.Client, new_contact: NewContact) -> None:
    contact = new_contact(agent, emails=["one-channel@example.com"])
    act(agent, contact, "opt-ins", {"channel": "text", "method": "verbal"})
    act(agent, contact, "opt-ins", {"channel": "email", "method": "web_form"})
    result = act(agent, contact, "dnd", {"on": True, "channels": ["text", "text"]}, method="PUT")
    assert result["contact"]["dnd"] == {"all_channels": False, "channels": ["text"]}
    refused = send(agent, contact, "text")
    assert refused.status_code == 409 and error_code(refused) == "dnd"
    assert send(agent, contact, "email").status_code == 202


def test_a_reauthorization_by_hand_restarts_the_clock(agent: httpx.Client, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    refused = agent.post(f"{API}/contacts/{contact['id']}/reauthorization", json={"channel": "text",
                                                                                   "method": "verbal"})
    assert refused.status_code == 409 and error_code(refused) == "invalid_transition"
    long_ago = datetime(2025, 1, 6, 9, 0, tzinfo=UTC)
    act(agent, contact, "opt-ins", {"channel": "text", "method": "verbal", "occurred_at": long_ago.isoformat()})
    result = act(agent, contact, "reauthorization", {"channel": "text", "method": "phone_call"})
    text = consent_of(result["contact"], "text")
    assert text["method"] == "phone_call"
    assert datetime.fromisoformat(text["opted_in_at"]) > datetime.now(UTC) - timedelta(minutes=1)


# ------------------------------------------------------------------------------------- enrolments


def test_enrolling_by_hand_and_taking_the_contact_out(agent: httpx.Client, new_contact: NewContact) -> None:
    contact = new_contact(agent)
    base = f"{API}/contacts/{contact['id']}/enrollments"
    unknown = agent.post(base, json={"flow": "no_such_flow"})
    assert unknown.status_code == 422 and error_code(unknown) == "unknown_flow"  # the body is wrong, not the URL
    enrolled = agent.post(base, json={"flow": "payment_plan_opt_in"})
    assert enrolled.status_code == 201, enrolled.text
    enrollment = enrolled.json()
    assert (enrollment["flow"], enrollment["status"]) == ("payment_plan_opt_in", "active")
    assert any("opt-in request queued" in s["outcome"] for s in enrollment["steps"])
    removed = agent.delete(f"{base}/{enrollment['id']}")
    assert removed.status_code == 200 and removed.json()["status"] == "cancelled"
    again = agent.delete(f"{base}/{enrollment['id']}")
    assert again.status_code == 409 and error_code(again) == "enrollment_ended"
    assert agent.delete(f"{base}/987654").status_code == 404
    assert [e["status"] for e in agent.get(base).json()["enrollments"]] == ["cancelled"]


# ------------------------------------------------------------------------------------- settings


def test_settings_are_resolved_and_secrets_never_shown(server: Server, admin_client: httpx.Client) -> None:
    response = admin_client.get(f"{API}/settings")
    assert response.status_code == 200
    body = response.json()
    assert body["settings"]["program_name"] == "E2E Motors alerts"
    assert body["settings"]["pin_max_attempts"] == 5  # a default the org never set
    assert body["settings"]["twilio_auth_token"] == "********"
    assert server.twilio_token not in response.text
    assert body["settings"]["unsubscribe_secret"] is None


def test_settings_change_by_merge_patch(server: Server, library: Library) -> None:
    org = api_org(server, library)
    before, after = library.new_number(), library.new_number()
    assert org.sms(before, "nimmermehr").status_code == 200
    assert library.consent(org.org.id, before).state.value == "unknown"
    with org.client("admin") as client:
        first = client.patch(f"{API}/settings", json={
            "modes": {"email": "disclaimer"}, "reauth_days": {"text": 365}, "pin_required": True,
            "consent_methods": ["verbal", "paper_form"], "quiet_hours": True,
            "templates": {"customer/help": "{{ org_name }}: call us. Reply {{ stop_word }} to stop."},
            "caps": [{"name": "calls", "limit": 3, "window_hours": 24, "channels": ["call"]}],
            "keywords": {"de": {"opt_out": ["nimmermehr"]}}})
        assert first.status_code == 200, first.text
        assert org.sms(after, "nimmermehr").status_code == 200
        assert "call us" in org.sms(after, "HELP").text
        second = client.patch(f"{API}/settings", json={"modes": {"text": "disclaimer"}, "templates": {
            "customer/help": None}, "pin_required": None})
        assert second.status_code == 200, second.text
        settings = second.json()["settings"]
    assert settings["modes"] == {"email": "disclaimer", "text": "disclaimer"}
    assert settings["templates"] == {}
    assert settings["pin_required"] is False
    assert settings["reauth_days"] == {"text": 365}
    assert settings["consent_methods"] == ["verbal", "paper_form"]
    assert settings["caps"][0]["limit"] == 3
    assert settings["keywords"] == {"de": {"opt_out": ["nimmermehr"]}}
    assert library.consent(org.org.id, after).state.value == "opted_out"
    assert "call us" not in org.sms(after, "HELP").text


@pytest.mark.parametrize(("patch", "code", "names"), [
    pytest.param({"pin_ttl_minutes": 0}, "invalid_input", "pin_ttl_minutes", id="out-of-range"),
    pytest.param({"reauth_days": {"text": 0}}, "invalid_input", "reauth_days", id="zero-reauth-period"),
    pytest.param({"consent_methods": ["  "]}, "invalid_input", "consent_methods", id="blank-consent-method"),
    pytest.param({"group_messaging": {"text": True}}, "invalid_settings", "group messaging", id="group-in-consent"),
    pytest.param({"templates": {"customer/help": "Hi {{ customer_ssn }}"}}, "invalid_template", "customer_ssn",
                 id="template-unknown-variable"),
    pytest.param({"templates": {"customer/help": "{% if %}"}}, "invalid_template", "customer/help",
                 id="template-syntax"),
    pytest.param({"templates": {"customer/nonsense": "hello"}}, "unknown_template", "customer/nonsense",
                 id="unknown-template"),
    pytest.param({"templates": {"customer/help": "{{ (10**(2*10**7)) % 7 }}"}}, "invalid_template",
                 "over the template limits", id="template-huge-number"),
    pytest.param({"templates": {"customer/help": "{{ org_name }}{% for a in contact_name %}{% for b in contact_name %}"
                                                 ".{% endfor %}{% endfor %}"}},
                 "invalid_template", "with long values", id="template-cost-grows-with-the-name"),
    pytest.param({"keywords": {"english!": {"opt_out": ["halt"]}}}, "invalid_input", "english!",
                 id="bad-language-code"),
    pytest.param({"keywords": {"en": {"opt_out": ["yes"]}}}, "invalid_input", "yes", id="keyword-clash"),
    pytest.param({"modes": {"fax": "consent"}}, "invalid_input", "modes", id="unknown-channel"),
    pytest.param({"colour": "blue"}, "invalid_input", "colour", id="unknown-setting"),
])
def test_invalid_settings_are_a_422_naming_the_field_and_change_nothing(
        server: Server, library: Library, patch: dict[str, Any], code: str, names: str) -> None:
    org = api_org(server, library)
    with org.client("admin") as client:
        before = client.get(f"{API}/settings").json()
        response = client.patch(f"{API}/settings", json=patch)
        assert response.status_code == 422, response.text
        assert error_code(response) == code
        assert names in response.json()["error"]["message"]
        assert client.get(f"{API}/settings").json() == before


def test_group_messaging_is_allowed_on_a_channel_out_of_consent_mode(server: Server, library: Library) -> None:
    org = api_org(server, library)
    with org.client("admin") as client:
        response = client.patch(f"{API}/settings", json={"modes": {"text": "disclaimer"},
                                                          "group_messaging": {"text": True}})
        assert response.status_code == 200, response.text
        back = client.patch(f"{API}/settings", json={"modes": {"text": "consent"}})
        assert back.status_code == 422 and "group messaging" in back.json()["error"]["message"]


# ------------------------------------------------------------------------------------- reports


def test_the_consent_report_counts_from_the_ledger(server: Server, library: Library, new_contact: NewContact) -> None:
    org = api_org(server, library)
    with org.client("supervisor") as client:
        converted, unanswered, recorded, leaving = (new_contact(client) for _ in range(4))
        for contact in (converted, unanswered):
            assert client.post(f"{API}/contacts/{contact['id']}/opt-in-request",
                               json={"channel": "text"}).status_code == 200
        org.sms(converted["addresses"][0]["value"], "YES")
        client.post(f"{API}/contacts/{recorded['id']}/opt-ins", json={"channel": "call", "method": "paper_form"})
        org.sms(leaving["addresses"][0]["value"], "STOP")
        org.sms(leaving["addresses"][0]["value"], "STOP")  # a second STOP is not a second opt-out

        report = client.get(f"{API}/reports/consent").json()
        as_csv = client.get(f"{API}/reports/consent", params={"format": "csv"})
        today = datetime.now(UTC).date().isoformat()
        today_only = client.get(f"{API}/reports/consent", params={"from": today, "to": today}).json()
        empty = client.get(f"{API}/reports/consent", params={"from": "2020-01-01", "to": "2020-01-31"}).json()
        backwards = client.get(f"{API}/reports/consent", params={"from": "2020-02-01", "to": "2020-01-01"})
        bad_format = client.get(f"{API}/reports/consent", params={"format": "xml"})
        bad_date = client.get(f"{API}/reports/consent", params={"from": "last week"})

    totals = report["totals"]
    assert (totals["opt_ins"], totals["opt_outs"], totals["requests"]) == (2, 1, 2)
    assert (totals["requested_addresses"], totals["converted"], totals["conversion_rate"]) == (2, 1, 0.5)
    by_channel = {row["channel"]: row for row in report["by_channel"]}
    assert by_channel["text"]["mode"] == "consent" and by_channel["text"]["opt_ins"] == 1
    assert by_channel["call"]["opt_ins"] == 1 and by_channel["call"]["requested_addresses"] == 0
    by_method = {(row["channel"], row["method"]): row for row in report["by_method"]}
    assert by_method[("text", "keyword")]["opt_ins"] == 1 and by_method[("text", "keyword")]["opt_outs"] == 1
    assert by_method[("call", "paper_form")]["opt_ins"] == 1
    assert report["by_mode"] == [{**totals, "mode": "consent"}]

    assert as_csv.status_code == 200 and as_csv.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    [all_row] = [r for r in rows if r["channel"] == "*"]
    assert (all_row["opt_ins"], all_row["converted"], all_row["conversion_rate"]) == ("2", "1", "0.5")

    assert today_only["totals"] == totals
    assert empty["totals"]["requests"] == 0 and empty["by_channel"] == []
    assert backwards.status_code == 422 and error_code(backwards) == "invalid_period"
    assert bad_format.status_code == 422
    assert bad_date.status_code == 400


def test_a_yes_awaiting_its_pin_is_not_yet_an_opt_in(server: Server, library: Library,
                                                    new_contact: NewContact) -> None:
    org = api_org(server, library, pin_required=True)
    with org.client("supervisor") as client:
        contact = new_contact(client)
        act(client, contact, "opt-in-request", {"channel": "text"})
        [answer] = twiml_messages(org.sms(contact["addresses"][0]["value"], "YES"))
        waiting = client.get(f"{API}/reports/consent").json()["totals"]
        pin = re.search(r"\b(\d{6})\b", answer)
        assert pin, answer
        act(client, contact, "pin-confirmation", {"channel": "text", "pin": pin.group(1)})
        confirmed = client.get(f"{API}/reports/consent").json()["totals"]
    assert (waiting["opt_ins"], waiting["converted"]) == (0, 0)
    assert (confirmed["opt_ins"], confirmed["converted"], confirmed["conversion_rate"]) == (1, 1, 1.0)


# ------------------------------------------------------------------------------------- OpenAPI


def test_every_route_is_documented_with_its_schemas_and_the_bearer_scheme(server: Server) -> None:
    spec = httpx.get(f"{server.base_url}/docs/openapi.json", timeout=15).json()
    scheme = spec["components"]["securitySchemes"]["token"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    operations = {(method.upper(), path): op for path, ops in spec["paths"].items() if path.startswith(API)
                  for method, op in ops.items() if method.upper() not in ("HEAD", "OPTIONS")}
    expected = {
        ("POST", "/contacts"), ("GET", "/contacts"), ("GET", "/contacts/{contact_id}"),
        ("PATCH", "/contacts/{contact_id}"), ("GET", "/contacts/{contact_id}/ledger"),
        ("GET", "/contacts/{contact_id}/messages"), ("GET", "/contacts/{contact_id}/enrollments"),
        ("POST", "/contacts/{contact_id}/enrollments"),
        ("DELETE", "/contacts/{contact_id}/enrollments/{enrollment_id}"),
        *(("POST", f"/contacts/{{contact_id}}/{action}") for action in (
            "opt-in-request", "quick-opt-in", "opt-ins", "pin-confirmation", "reauthorization", "reauth-request",
            "opt-out", "reset", "do-not-contact-lift")),
        ("PUT", "/contacts/{contact_id}/dnd"), ("PUT", "/contacts/{contact_id}/marketing"),
        ("POST", "/messages"), ("POST", "/events"), ("GET", "/unassociated"),
        ("POST", "/unassociated/{message_id}/link"), ("GET", "/settings"), ("PATCH", "/settings"),
        ("GET", "/reports/consent"), ("GET", "/agents"), ("POST", "/agents/{agent_id}/revoke"),
        ("PATCH", "/agents/{agent_id}"), ("POST", "/checks"), ("POST", "/attempts"), ("POST", "/bounces/dsn"),
        ("PUT", "/contacts/by-external-id/{external_id}"), ("POST", "/imports"), ("GET", "/imports/{import_id}"),
        ("GET", "/imports/{import_id}/rejects"),
        ("POST", "/event-endpoints"), ("GET", "/event-endpoints"), ("PATCH", "/event-endpoints/{endpoint_id}"),
        ("DELETE", "/event-endpoints/{endpoint_id}"), ("GET", "/event-endpoints/{endpoint_id}/secret"),
        ("POST", "/event-endpoints/{endpoint_id}/rotate-secret"), ("GET", "/event-endpoints/{endpoint_id}/deliveries"),
        ("POST", "/event-deliveries/{delivery_id}/redeliver"),
        ("GET", "/sub-orgs"), ("POST", "/sub-orgs"), ("GET", "/sub-orgs/{org_id}/settings"),
        ("PATCH", "/sub-orgs/{org_id}/settings"),
    }
    without_body = {("POST", API + path) for path in (
        "/agents/{agent_id}/revoke", "/event-endpoints/{endpoint_id}/rotate-secret",
        "/event-deliveries/{delivery_id}/redeliver")}
    csv_body, csv_answer = {("POST", API + "/imports")}, {("GET", API + "/imports/{import_id}/rejects")}
    bounce_report = operations[("POST", API + "/bounces/dsn")]["requestBody"]
    assert bounce_report["required"] is True and list(bounce_report["content"]) == [
        "message/rfc822", "application/octet-stream"]
    without_body.add(("POST", API + "/bounces/dsn"))
    assert set(operations) == {(method, API + path) for method, path in expected}
    for (method, path), op in operations.items():
        assert op["security"] == [{"token": []}], (method, path)
        assert "401" in op["responses"], (method, path)
        ok = next(status for status in op["responses"] if status.startswith("2"))
        if (method, path) in csv_answer:
            assert "text/csv" in op["responses"][ok]["content"], (method, path)
        else:
            assert "$ref" in op["responses"][ok]["content"]["application/json"]["schema"], (method, path)
        if (method, path) in csv_body:
            assert op["requestBody"]["required"] is True and "text/csv" in op["requestBody"]["content"]
        elif method in ("POST", "PUT", "PATCH") and (method, path) not in without_body:
            body = op["requestBody"]
            assert body["required"] is True, (method, path)
            schema_name = body["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
            assert spec["components"]["schemas"][schema_name]["additionalProperties"] is False
    manual = spec["components"]["schemas"]["ManualOptInIn"]
    assert set(manual["required"]) == {"channel", "method"}
    assert manual["properties"]["occurred_at"]["nullable"] is True
    assert spec["components"]["schemas"]["Channel"]["enum"] == ["text", "call", "email", "whatsapp", "chat"]


def test_the_browsable_docs_are_served(server: Server) -> None:
    response = httpx.get(f"{server.base_url}/docs", timeout=15, follow_redirects=True)
    assert response.status_code == 200
    assert "text/html" in response.headers["content-type"]
