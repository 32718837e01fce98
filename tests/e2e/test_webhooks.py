"""The inbound webhooks of the running server, over HTTP: Twilio SMS/WhatsApp (signed with the real
`RequestValidator`), the signed chat webhook, one-click unsubscribe, and the metrics they feed."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sanic.request import RequestParameters
from twilio.request_validator import RequestValidator

from e2e.helpers import error_code, twiml_messages
from optflow.domain import commands as c
from optflow.domain.model import Channel, State
from optflow.domain.signatures import sign_webhook_body
from optflow.domain.tokens import UnsubscribeTarget, make_token

if TYPE_CHECKING:
    from e2e.conftest import Library, Server

pytestmark = pytest.mark.e2e


def inbound_rows(library: Library, org_id: int, address: str) -> list[dict[str, Any]]:
    return library.messages(org_id, address, direction="in")


# ------------------------------------------------------------------------------------- Twilio


def test_a_signed_stop_is_answered_in_twiml_and_opts_out(server: Server, library: Library) -> None:
    number = library.new_number()
    replies = twiml_messages(server.sms(number, "STOP"))
    assert len(replies) == 1 and "START" in replies[0]
    assert library.consent(server.org_id, number).state is State.OPTED_OUT
    [entry] = library.ledger(server.org_id, number)
    assert (entry["trigger"], entry["to_state"], entry["method"]) == ("opt_out", "opted_out", "keyword")


@pytest.mark.parametrize("signature", [
    pytest.param("", id="missing"),
    pytest.param(RequestValidator("not-the-token").compute_signature(
        "http://127.0.0.1/webhooks/twilio/sms", {"Body": "STOP"}), id="forged"),
])
def test_a_missing_or_forged_signature_is_refused_and_changes_nothing(
        server: Server, library: Library, signature: str) -> None:
    number = library.new_number()
    params = {"From": number, "To": server.org_number, "Body": "STOP", "MessageSid": server.next_sid()}
    response = server.twilio_post(params, signature=signature)
    assert response.status_code == 403 and error_code(response) == "forbidden"
    assert library.consent(server.org_id, number).state is State.UNKNOWN
    assert inbound_rows(library, server.org_id, number) == []


def test_a_signature_replayed_with_a_changed_body_is_refused(server: Server, library: Library) -> None:
    number = library.new_number()
    signed = {"From": number, "To": server.org_number, "Body": "hello", "MessageSid": server.next_sid()}
    response = server.twilio_post({**signed, "Body": "STOP"}, sign_params=signed)
    assert response.status_code == 403
    assert library.consent(server.org_id, number).state is State.UNKNOWN


def test_a_signature_made_with_another_orgs_token_is_refused(server: Server, library: Library) -> None:
    """The token is the org's own: the default org's token does not sign for another org's number."""
    org = library.new_org(twilio_auth_token="a-different-orgs-token")
    number = library.new_number()
    response = server.sms(number, "STOP", To=org.number)  # signed with the e2e org's token
    assert response.status_code == 403
    assert library.consent(org.id, number).state is State.UNKNOWN


def test_the_signature_covers_the_public_url_with_its_query_string(server: Server, library: Library) -> None:
    params = {"From": library.new_number(), "To": server.org_number, "Body": "HELP", "MessageSid": server.next_sid()}
    path = "/webhooks/twilio/sms?site=east"
    assert twiml_messages(server.twilio_post(params, path=path))  # signed over the URL as called
    without_query = RequestValidator(server.twilio_token).compute_signature(
        server.base_url + "/webhooks/twilio/sms", params)
    refused = server.twilio_post({**params, "MessageSid": server.next_sid()}, path=path, signature=without_query)
    assert refused.status_code == 403


def test_blank_and_unfamiliar_parameters_are_part_of_the_signature(server: Server, library: Library) -> None:
    """Twilio signs every parameter it sends, empty ones (FromCity=) and ones added after this
    code was written; dropping any of them would refuse genuine requests."""
    number = library.new_number()
    response = server.sms(number, "STOP", FromCity="", FromState="", NumSegments="1", SomeFutureField="x y")
    assert len(twiml_messages(response)) == 1
    assert library.consent(server.org_id, number).state is State.OPTED_OUT


def test_a_retried_message_gets_the_same_reply_and_counts_once(server: Server, library: Library) -> None:
    number = library.new_number()
    sid = server.next_sid()
    first = server.sms(number, "STOP", sid=sid)
    second = server.sms(number, "STOP", sid=sid)
    assert twiml_messages(first) == twiml_messages(second) != []
    assert len(library.ledger(server.org_id, number)) == 1
    assert len(inbound_rows(library, server.org_id, number)) == 1
    assert len(library.messages(server.org_id, number, direction="out", audience="customer")) == 1


def test_opt_out_type_stop_is_honoured_whatever_the_body_says(server: Server, library: Library) -> None:
    number = library.new_number()
    replies = twiml_messages(server.sms(number, "Thanks, see you Tuesday", OptOutType="STOP"))
    assert len(replies) == 1
    assert library.consent(server.org_id, number).state is State.OPTED_OUT


def test_opt_out_type_start_reopens_whatever_the_body_says(server: Server, library: Library) -> None:
    number = library.new_number()
    twiml_messages(server.sms(number, "STOP"))
    replies = twiml_messages(server.sms(number, "ok", OptOutType="START"))
    assert len(replies) == 1
    assert library.consent(server.org_id, number).state is State.OPTED_IN


def test_opt_out_type_help_gets_the_help_reply_and_changes_no_consent(server: Server, library: Library) -> None:
    number = library.new_number()
    help_reply = twiml_messages(server.sms(number, "HELP"))
    assert twiml_messages(server.sms(number, "what is this", OptOutType="HELP")) == help_reply
    assert library.consent(server.org_id, number).state is State.UNKNOWN
    assert [row["intent"] for row in inbound_rows(library, server.org_id, number)] == ["help", "help"]


def test_a_whatsapp_sender_changes_only_the_whatsapp_consent(server: Server, library: Library) -> None:
    number = library.new_number()
    twiml_messages(server.sms(f"whatsapp:{number}", "STOP", To=f"whatsapp:{server.org_number}"))
    assert library.consent(server.org_id, number, Channel.WHATSAPP).state is State.OPTED_OUT
    assert library.consent(server.org_id, number, Channel.TEXT).state is State.UNKNOWN


def test_a_message_that_needs_no_reply_gets_an_empty_response(server: Server, library: Library) -> None:
    number = library.new_number()  # belongs to no contact: waits for a supervisor, unanswered
    response = server.sms(number, "hi, is the shop open on Sunday?")
    assert twiml_messages(response) == []
    assert [row["status"] for row in inbound_rows(library, server.org_id, number)] == ["unassociated"]


def test_a_number_no_org_owns_is_a_404(server: Server, library: Library) -> None:
    response = server.sms(library.new_number(), "STOP", To="+12025550188")
    assert response.status_code == 404 and error_code(response) == "unknown_number"


@pytest.mark.parametrize("field", ["From", "To", "Body"])
def test_a_missing_field_is_a_400_naming_it(server: Server, library: Library, field: str) -> None:
    params = {"From": library.new_number(), "To": server.org_number, "Body": "STOP", "MessageSid": server.next_sid()}
    del params[field]
    response = server.twilio_post(params)
    assert response.status_code == 400
    assert error_code(response) == "missing_field" and field in response.json()["error"]["message"]


@pytest.mark.parametrize("field", ["From", "To"])
def test_an_unparseable_number_is_a_422(server: Server, library: Library, field: str) -> None:
    params = {"From": library.new_number(), "To": server.org_number, "Body": "STOP", "MessageSid": server.next_sid(),
              field: "call me maybe"}
    response = server.twilio_post(params)
    assert response.status_code == 422 and error_code(response) == "invalid_phone"


def every_value(params: dict[str, Any]) -> RequestParameters:
    """The form as the twilio library signs a repeated field (every value), as Twilio itself would."""
    return RequestParameters({name: value if isinstance(value, list) else [value] for name, value in params.items()})


@pytest.mark.parametrize("field", ["Body", "From", "To", "MessageSid", "OptOutType"])
def test_a_repeated_single_valued_field_is_a_400_and_stores_nothing(
        server: Server, library: Library, field: str) -> None:
    number = library.new_number()
    params: dict[str, Any] = {"From": number, "To": server.org_number, "Body": "STOP",
                              "MessageSid": server.next_sid(), "OptOutType": "STOP"}
    second = {"Body": "hello", "From": library.new_number(), "To": server.org_number, "MessageSid": server.next_sid(),
              "OptOutType": "START"}[field]
    params[field] = [params[field], second]
    response = server.twilio_post(params, sign_params=every_value(params))
    assert response.status_code == 400, response.text
    assert error_code(response) == "repeated_field" and repr(field) in response.json()["error"]["message"]
    assert library.consent(server.org_id, number).state is State.UNKNOWN
    assert inbound_rows(library, server.org_id, number) == []
    assert library.ledger(server.org_id, number) == []


def test_a_repeated_blank_or_extra_field_is_still_accepted(server: Server, library: Library) -> None:
    number = library.new_number()
    params: dict[str, Any] = {"From": number, "To": server.org_number, "Body": "STOP", "MessageSid": server.next_sid(),
                              "MediaUrl0": ["https://a.example/1", "https://a.example/2"]}
    assert server.twilio_post(params, sign_params=every_value(params)).status_code == 200
    assert library.consent(server.org_id, number).state is State.OPTED_OUT


def test_a_form_that_is_not_a_form_is_a_400_not_a_500(server: Server) -> None:
    with httpx.Client(timeout=15) as client:
        response = client.post(server.base_url + "/webhooks/twilio/sms", content=b"\xff\xfe not a form",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400


# ------------------------------------------------------------------------------------- chat


def chat_post(server: Server, payload: dict[str, Any] | bytes, *, secret: str | None = "",
              content_type: str = "application/json", signature: str | None = None) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": content_type}
    if signature is not None:
        headers["X-Optflow-Signature"] = signature
    elif secret is not None:
        headers["X-Optflow-Signature"] = sign_webhook_body(secret or server.chat_secret, body)
    with httpx.Client(timeout=15) as client:
        return client.post(server.base_url + "/webhooks/chat", content=body, headers=headers)


def chat_message(server: Server, sender: str, text: str, **extra: Any) -> dict[str, Any]:
    return {"channel": "chat", "from": sender, "to": server.org_number, "text": text,
            "message_id": server.next_sid(), **extra}


def test_a_signed_chat_message_is_answered_in_json_and_a_retry_is_flagged(server: Server, library: Library) -> None:
    sender = "chat-user-" + library.new_number()[-7:]
    payload = chat_message(server, sender, "stop")
    first = chat_post(server, payload)
    assert first.status_code == 200, first.text
    answer = first.json()
    assert (answer["intent"], answer["state"], answer["duplicate"]) == ("opt_out", "opted_out", False)
    assert len(answer["replies"]) == 1
    again = chat_post(server, payload).json()
    assert again == {**answer, "duplicate": True}
    assert len(library.ledger(server.org_id, sender)) == 1


def test_a_chat_message_on_whatsapp_changes_the_whatsapp_consent(server: Server, library: Library) -> None:
    number = library.new_number()
    response = chat_post(server, chat_message(server, number, "STOP", channel="whatsapp"))
    assert response.json()["state"] == "opted_out"
    assert library.consent(server.org_id, number, Channel.WHATSAPP).state is State.OPTED_OUT
    assert library.consent(server.org_id, number, Channel.TEXT).state is State.UNKNOWN


@pytest.mark.parametrize("secret, signature", [
    pytest.param(None, None, id="unsigned"),
    pytest.param("another-secret", None, id="wrong-secret"),
    pytest.param(None, "sha256=" + "0" * 64, id="made-up"),
])
def test_a_chat_message_without_a_valid_signature_is_refused(
        server: Server, library: Library, secret: str | None, signature: str | None) -> None:
    sender = "chat-user-" + library.new_number()[-7:]
    response = chat_post(server, chat_message(server, sender, "stop"), secret=secret, signature=signature)
    assert response.status_code == 403
    assert library.consent(server.org_id, sender, Channel.CHAT).state is State.UNKNOWN


def test_a_chat_signature_over_another_body_is_refused(server: Server) -> None:
    signed = json.dumps(chat_message(server, "chat-user-1", "hello")).encode()
    sent = json.dumps(chat_message(server, "chat-user-1", "stop")).encode()
    response = chat_post(server, sent, signature=sign_webhook_body(server.chat_secret, signed))
    assert response.status_code == 403


def test_chat_input_errors_are_4xx(server: Server) -> None:
    good = chat_message(server, "chat-user-2", "hi")
    assert chat_post(server, good, content_type="text/plain").status_code == 415
    assert chat_post(server, b'{"channel": "chat", "from": ').status_code == 400
    assert chat_post(server, b'["a list"]').status_code == 400
    missing = chat_post(server, {k: v for k, v in good.items() if k != "from"})
    assert missing.status_code == 400 and "'from'" in missing.json()["error"]["message"]
    assert chat_post(server, {**good, "channel": "pigeon"}).status_code == 422
    assert chat_post(server, {**good, "to": "+12025550188"}).status_code == 404


@pytest.mark.parametrize("field", ["from", "text", "message_id"])
def test_a_chat_message_repeating_a_field_is_a_400_and_stores_nothing(
        server: Server, library: Library, field: str) -> None:
    sender = "chat-user-" + library.new_number()[-7:]
    good = chat_message(server, sender, "stop")
    other = {"from": "chat-user-other", "text": "hello", "message_id": server.next_sid()}[field]
    pairs = [*good.items(), (field, other)]  # the field twice: json.dumps of a dict cannot write that
    members = [f"{json.dumps(name)}: {json.dumps(value)}" for name, value in pairs]
    response = chat_post(server, ("{" + ", ".join(members) + "}").encode())
    assert response.status_code == 400 and error_code(response) == "repeated_field"
    assert library.consent(server.org_id, sender, Channel.CHAT).state is State.UNKNOWN
    assert library.consent(server.org_id, "chat-user-other", Channel.CHAT).state is State.UNKNOWN


# ------------------------------------------------------------------------------------- unsubscribe


def unsubscribe_url(server: Server, library: Library, org_id: int, address: str) -> str:
    token = make_token(library.system.secret, UnsubscribeTarget(org_id, address, Channel.EMAIL))
    return f"{server.base_url}/unsubscribe/{token}"


def email_contact(library: Library, org_id: int) -> tuple[int, str]:
    email = f"reader{library.new_number()[-7:]}@example.net"
    result = library.handle(c.CreateContact(org_id=org_id, name="Reader", emails=(email,)))
    return result.contact_id, email


def marketing_allowed(library: Library, org_id: int, contact_id: int) -> bool:
    with library.system.bus.uow() as uow:
        return uow.contacts.get(org_id, contact_id).marketing_allowed


def marketing_entries(library: Library, org_id: int, contact_id: int) -> list[dict[str, Any]]:
    with library.system.bus.uow() as uow:
        return [e for e in uow.ledger.entries(org_id) if e["contact_id"] == contact_id
                and e["trigger"] == "marketing_off"]


def test_the_unsubscribe_page_changes_nothing_and_its_buttons_unsubscribe(server: Server, library: Library) -> None:
    contact_id, email = email_contact(library, server.org_id)
    url = unsubscribe_url(server, library, server.org_id, email)
    with httpx.Client(timeout=15) as client:
        page = client.get(url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert email in page.text and re.search(r'<form method="post">', page.text)
        assert library.consent(server.org_id, email, Channel.EMAIL).state is State.UNKNOWN
        assert library.ledger(server.org_id, email) == []
        fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page.text))
        buttons = dict((value, name) for name, value in re.findall(
            r'<button type="submit" name="([^"]+)" value="([^"]*)">', page.text))
        assert set(buttons) == {"marketing", "all"}
        # What the browser sends for "Stop marketing emails": marketing ends, email consent stays.
        done = client.post(url, data={**fields, buttons["marketing"]: "marketing"})
        assert done.status_code == 200 and "unsubscribed from marketing emails" in done.text
        assert library.consent(server.org_id, email, Channel.EMAIL).state is State.UNKNOWN
        assert not marketing_allowed(library, server.org_id, contact_id)
        # And for "Stop all emails": the address is opted out of email.
        done = client.post(url, data={**fields, buttons["all"]: "all"})
    assert done.status_code == 200 and "unsubscribed" in done.text
    assert library.consent(server.org_id, email, Channel.EMAIL).state is State.OPTED_OUT


def test_one_click_post_ends_marketing_once_without_redirect(server: Server, library: Library) -> None:
    contact_id, email = email_contact(library, server.org_id)
    url = unsubscribe_url(server, library, server.org_id, email)
    with httpx.Client(timeout=15, follow_redirects=False) as client:
        first = client.post(url, content=b"List-Unsubscribe=One-Click",
                            headers={"Content-Type": "application/x-www-form-urlencoded"})
        second = client.post(url, content=b"List-Unsubscribe=One-Click",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    for response in (first, second):
        assert response.status_code == 200 and "location" not in response.headers
    assert not marketing_allowed(library, server.org_id, contact_id)
    assert library.consent(server.org_id, email, Channel.EMAIL).state is State.UNKNOWN  # receipts still go
    [entry] = marketing_entries(library, server.org_id, contact_id)  # the repeated POST recorded nothing more
    assert (entry["actor_kind"], entry["actor_id"]) == ("system", "one-click")


def test_one_click_post_as_multipart_ends_marketing(server: Server, library: Library) -> None:
    contact_id, email = email_contact(library, server.org_id)
    with httpx.Client(timeout=15) as client:
        response = client.post(unsubscribe_url(server, library, server.org_id, email),
                               files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert "multipart/form-data" in response.request.headers["content-type"]
    assert not marketing_allowed(library, server.org_id, contact_id)


def test_one_click_for_an_address_no_contact_owns_still_opts_out(server: Server, library: Library) -> None:
    email = f"gone{library.new_number()[-7:]}@example.net"
    with httpx.Client(timeout=15) as client:
        response = client.post(unsubscribe_url(server, library, server.org_id, email),
                               data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 200
    assert library.consent(server.org_id, email, Channel.EMAIL).state is State.OPTED_OUT
    [entry] = library.ledger(server.org_id, email)
    assert (entry["method"], entry["contact_id"]) == ("one_click_unsubscribe", None)


@pytest.mark.parametrize("token", [
    pytest.param("garbage", id="garbage"),
    pytest.param("eyJhIjoxfQ.c2lnbmF0dXJl", id="forged"),
    pytest.param("%E2%9C%93.%00", id="odd-bytes"),
])
def test_a_bad_unsubscribe_link_is_a_404_page(server: Server, token: str) -> None:
    with httpx.Client(timeout=15) as client:
        for method in ("GET", "POST"):
            response = client.request(method, f"{server.base_url}/unsubscribe/{token}",
                                      data={"List-Unsubscribe": "One-Click"} if method == "POST" else None)
            assert response.status_code == 404, (method, response.text)
            assert response.headers["content-type"].startswith("text/html")


def test_a_tampered_unsubscribe_link_opts_nobody_out(server: Server, library: Library) -> None:
    _, email = email_contact(library, server.org_id)
    _, victim = email_contact(library, server.org_id)
    genuine = unsubscribe_url(server, library, server.org_id, email)
    signature = genuine.rsplit(".", 1)[1]
    forged_payload = make_token("guess", UnsubscribeTarget(server.org_id, victim, Channel.EMAIL)).split(".")[0]
    with httpx.Client(timeout=15) as client:
        response = client.post(f"{server.base_url}/unsubscribe/{forged_payload}.{signature}",
                               data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 404
    assert library.consent(server.org_id, victim, Channel.EMAIL).state is State.UNKNOWN


# ------------------------------------------------------------------------------------- metrics


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with httpx.Client(timeout=15) as client:
        response = client.get(server.base_url + "/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def increase(before: dict[Any, float], after: dict[Any, float], name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_count_messages_transitions_denials_and_webhook_latency(server: Server, library: Library) -> None:
    org = library.new_org()
    on_dnd = library.new_number()
    contact = library.handle(c.CreateContact(org_id=org.id, name="Quiet", phones=(on_dnd,))).contact_id
    library.handle(c.SetDnd(org_id=org.id, contact_id=contact, actor=org.agent, on=True, channels=(Channel.TEXT,)))
    before = scrape(server)
    twiml_messages(server.sms(library.new_number(), "STOP"))
    assert twiml_messages(server.sms(on_dnd, "YES", To=org.number)) == []  # the confirmation is refused
    assert server.sms(library.new_number(), "STOP", To="+12025550188").status_code == 404
    after = scrape(server)

    assert increase(before, after, "optflow_messages_received_total", channel="text", intent="opt_out") == 1
    assert increase(before, after, "optflow_messages_received_total", channel="text", intent="opt_in") == 1
    assert increase(before, after, "optflow_consent_transitions_total", trigger="opt_out", channel="text") == 1
    assert increase(before, after, "optflow_consent_transitions_total", trigger="accept", channel="text") == 1
    assert increase(before, after, "optflow_messages_sent_total", channel="text", kind="opt_out_confirmation") == 1
    assert increase(before, after, "optflow_policy_denials_total", channel="text", kind="opt_in_confirmation") == 1
    assert increase(before, after, "optflow_webhook_duration_seconds_count", route="twilio_sms") == 3
    assert increase(before, after, "optflow_webhook_duration_seconds_bucket", route="twilio_sms", le="+Inf") == 3
    assert increase(before, after, "optflow_webhook_requests_total", route="twilio_sms", status="200") == 2
    assert increase(before, after, "optflow_webhook_requests_total", route="twilio_sms", status="404") == 1
