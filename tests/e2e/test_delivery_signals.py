"""Issue 12, items 5 and 6 end to end: the real `optflow serve` sending through the real `twilio`
client to a loopback Twilio and through smtplib to a real SMTP server (aiosmtpd) that refuses an
address with 550; Twilio's status callbacks signed with the `twilio` library; a DSN fed to the
bounce mailbox (API and CLI); a mail provider's signed events; a dialler's week of checks and
attempts over HTTP, with explicit times (the server's clock is the real one)."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from e2e.conftest import ORG_NUMBER, TWILIO_TOKEN, Library, Server, _start, _stop, fresh_number
from e2e.helpers import API, ApiOrg, api_org, error_code
from fakes.smtp_server import SmtpSink
from fakes.twilio_api import FakeTwilioApi
from optflow.adapters import orm
from optflow.bootstrap import bootstrap
from optflow.config import Config
from optflow.domain.signatures import sign_webhook_body

REPO = Path(__file__).resolve().parents[2]
DSN = (REPO / "tests" / "fixtures" / "bounces" / "dsn_550.eml").read_bytes()
REFUSED_EMAIL = "nobody@customer.example"
EVENTS_SECRET = "e2e-email-events-secret"


@pytest.fixture(scope="module")
def twilio() -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi() as fake:
        yield fake


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        sink.recipient_replies[REFUSED_EMAIL] = "550 5.1.1 <nobody@customer.example>: no such user"
        yield sink


@pytest.fixture(scope="module")
def signals_server(tmp_path_factory: pytest.TempPathFactory, twilio: FakeTwilioApi,
                   smtp: SmtpSink) -> Iterator[Server]:
    server = _start(tmp_path_factory.mktemp("signals"), {
        "TWILIO_ACCOUNT_SID": twilio.account_sid, "TWILIO_AUTH_TOKEN": twilio.auth_token,
        "TWILIO_FROM_NUMBER": ORG_NUMBER, "TWILIO_API_BASE_URL": twilio.base_url,
        "OPTFLOW_TWILIO_STATUS_CALLBACKS": "1",
        "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(smtp.port), "SMTP_FROM": "service@e2e.example"})
    yield server
    _stop(server.process)


@pytest.fixture(scope="module")
def signals_library(signals_server: Server) -> Iterator[Library]:
    system = bootstrap(Config(database_url=signals_server.database_url, flows_dir=REPO / "flows"),
                       create_schema=False)
    yield Library(system)
    system.close()


@pytest.fixture
def shop(signals_server: Server, signals_library: Library) -> ApiOrg:
    """The org whose number the server sends from (the dispatcher's TWILIO_FROM_NUMBER)."""
    return ApiOrg(signals_server, _main_org(signals_library, signals_server), signals_server.tokens)


def _main_org(library: Library, server: Server) -> Any:
    from e2e.conftest import TestOrg
    from optflow.domain.model import Actor, ActorKind

    return TestOrg(server.org_id, ORG_NUMBER, Actor(ActorKind.AGENT, "1"))


def eventually(what: Callable[[], Any], timeout: float = 30.0) -> Any:
    """`what()` once it is truthy; the scheduler delivers the outbox every 2 seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError("timed out waiting")


def contact_opted_in(client: httpx.Client, channel: str, **fields: Any) -> dict[str, Any]:
    created = client.post(f"{API}/contacts", json={"name": "Sam Lee", **fields})
    assert created.status_code == 201, created.text
    contact = created.json()
    answer = client.post(f"{API}/contacts/{contact['id']}/opt-ins", json={"channel": channel, "method": "web_form"})
    assert answer.status_code == 200, answer.text
    return dict(contact)


def send(client: httpx.Client, contact: dict[str, Any], channel: str,
         body: str = "Your car is ready") -> httpx.Response:
    extra = {"subject": "Service"} if channel == "email" else {}
    return client.post(f"{API}/messages", json={"contact_id": contact["id"], "channel": channel, "body": body,
                                                 "purpose": "transactional", **extra})


def status_callback(server: Server, url: str, sid: str, status: str, to: str, error: str | None = None,
                    token: str = TWILIO_TOKEN) -> httpx.Response:
    """POST a delivery report the way Twilio does: a form signed over the callback URL."""
    params = {"MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status, "To": to,
              "From": ORG_NUMBER, "AccountSid": "AC" + "0" * 32, "ApiVersion": "2010-04-01"}
    if error:
        params["ErrorCode"] = error
    signature = RequestValidator(token).compute_signature(url, params)
    return httpx.post(url, data=params, headers={"X-Twilio-Signature": signature}, timeout=15)


def message_status(library: Library, org_id: int, message_id: int) -> dict[str, Any]:
    [row] = [m for m in library.messages(org_id, _address_of(library, org_id, message_id)) if m["id"] == message_id]
    return row


def _address_of(library: Library, org_id: int, message_id: int) -> str:
    with library.system.bus.uow() as uow:
        row = uow.messages.get(message_id)
        assert row is not None and row.org_id == org_id
        return row.address


# ------------------------------------------------------------------------------ Twilio status callbacks


def test_twilio_status_callbacks_move_messages_and_carrier_errors_mark_the_number(
        signals_server: Server, signals_library: Library, shop: ApiOrg, twilio: FakeTwilioApi) -> None:
    number = fresh_number()
    with shop.client() as agent:
        contact = contact_opted_in(agent, "text", phones=[number])
        queued = send(agent, contact, "text")
        assert queued.status_code == 202, queued.text
        message_id = queued.json()["message_id"]
        request = eventually(lambda: next((r for r in twilio.accepted if r.to == number), None))
        callback = request.status_callback
        assert callback == f"{signals_server.base_url}/webhooks/twilio/status?message={message_id}"
        assert parse_qs(urlsplit(callback).query) == {"message": [str(message_id)]}

        forged = status_callback(signals_server, callback, request.sid, "delivered", number, token="not-the-token")
        assert forged.status_code == 403
        delivered = status_callback(signals_server, callback, request.sid, "delivered", number)
        assert delivered.status_code == 200, delivered.text
        assert delivered.json() == {"message_id": message_id, "status": "delivered"}
        late = status_callback(signals_server, callback, request.sid, "sent", number)
        assert late.json()["status"] == "delivered"  # never back from delivered to sent
        assert message_status(signals_library, signals_server.org_id, message_id)["status"] == "delivered"

        second = send(agent, contact, "text", "Your invoice").json()["message_id"]
        request = eventually(lambda: next((r for r in twilio.accepted if r.to == number and r.body == "Your invoice"),
                                          None))
        undelivered = status_callback(signals_server, request.status_callback or "", request.sid, "undelivered",
                                      number, error="30005")
        assert undelivered.json() == {"message_id": second, "status": "undelivered"}
        refused = send(agent, contact, "text", "Are you there?")
        assert refused.status_code == 409 and error_code(refused) == "unknown_number"
        consents = {k["channel"]: k for k in agent.get(f"{API}/contacts/{contact['id']}").json()["consents"]}
        assert consents["text"]["state"] == "opted_in"  # not an opt-out: the number cannot take texts
        assert consents["text"]["do_not_contact"] == "unknown_number"
        assert consents["call"]["do_not_contact"] is None  # the number may still be called
        lift = {"channel": "text", "evidence": "the customer says the number is in service again"}
        assert agent.post(f"{API}/contacts/{contact['id']}/do-not-contact-lift", json=lift).status_code == 403
    with shop.client("supervisor") as supervisor:
        lifted = supervisor.post(f"{API}/contacts/{contact['id']}/do-not-contact-lift", json=lift)
        assert lifted.status_code == 200, lifted.text
        again = supervisor.post(f"{API}/contacts/{contact['id']}/do-not-contact-lift", json=lift)
        assert again.status_code == 409 and error_code(again) == "not_on_do_not_contact"
    with shop.client() as agent:
        assert send(agent, contact, "text", "Back in touch").status_code == 202
    entries = [(e["trigger"], e["to_state"], e["method"]) for e in signals_library.ledger(signals_server.org_id, number)
               if e["trigger"].startswith("do_not_contact")]
    assert entries == [("do_not_contact_on", "do_not_contact:unknown_number", "carrier"),
                       ("do_not_contact_off", "do_not_contact:none", "agent")]


def test_a_status_callback_for_an_unknown_message_is_a_404(signals_server: Server) -> None:
    url = f"{signals_server.base_url}/webhooks/twilio/status"
    answer = status_callback(signals_server, url, "SM" + "f" * 32, "delivered", fresh_number())
    assert answer.status_code == 404


# ------------------------------------------------------------------------------ email bounces


def test_an_smtp_550_puts_the_address_on_do_not_contact_and_the_next_mail_is_refused(
        signals_server: Server, signals_library: Library, shop: ApiOrg, smtp: SmtpSink) -> None:
    with shop.client() as agent:
        contact = contact_opted_in(agent, "email", emails=[REFUSED_EMAIL])
        first = send(agent, contact, "email")
        assert first.status_code == 202, first.text
        message_id = first.json()["message_id"]
        row = eventually(lambda: (lambda r: r if r["status"] == "failed" else None)(
            message_status(signals_library, signals_server.org_id, message_id)))
        assert row["error_code"] == "550"
        refused = send(agent, contact, "email", "Your next receipt")
        assert refused.status_code == 409 and error_code(refused) == "bounced"
    assert all(REFUSED_EMAIL not in mail.rcpt_tos for mail in smtp.received)


def test_a_dsn_fed_to_the_bounce_mailbox_puts_the_address_on_do_not_contact(
        signals_server: Server, shop: ApiOrg) -> None:
    with shop.client() as agent, shop.client("supervisor") as supervisor:
        contact = contact_opted_in(agent, "email", emails=["gone@example.net"])
        not_rfc822 = supervisor.post(f"{API}/bounces/dsn", content=DSN, headers={"Content-Type": "text/plain"})
        assert not_rfc822.status_code == 415
        assert agent.post(f"{API}/bounces/dsn", content=DSN,
                          headers={"Content-Type": "message/rfc822"}).status_code == 403
        answer = supervisor.post(f"{API}/bounces/dsn", content=DSN, headers={"Content-Type": "message/rfc822"})
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"bounced": 1, "complained": 0, "unchanged": 0, "invalid": 0}
        refused = send(agent, contact, "email")
        assert refused.status_code == 409 and error_code(refused) == "bounced"


def test_the_bounce_mailbox_command_reads_a_dsn_piped_by_the_mta(signals_server: Server, shop: ApiOrg,
                                                                 tmp_path: Path) -> None:
    address = "moved@example.org"
    with shop.client() as agent:
        contact = contact_opted_in(agent, "email", emails=[address])
        ran = subprocess.run(
            [sys.executable, "-m", "optflow", "--database", signals_server.database_url, "bounces", "ingest",
             "--org", str(signals_server.org_id), "-"],
            input=DSN.replace(b"gone@example.net", address.encode()), capture_output=True, timeout=120, cwd=tmp_path)
        assert ran.returncode == 0, ran.stderr
        assert b"bounced: 1" in ran.stdout
        refused = send(agent, contact, "email")
        assert refused.status_code == 409 and error_code(refused) == "bounced"


def test_mail_provider_events_signed_with_the_org_secret(signals_server: Server, signals_library: Library) -> None:
    org = api_org(signals_server, signals_library, email_events_secret=EVENTS_SECRET)
    url = f"{signals_server.base_url}/webhooks/email/{org.org.id}"
    with org.client() as agent:
        complainer = contact_opted_in(agent, "email", emails=["angry@customer.example"])
        bouncer = contact_opted_in(agent, "email", emails=["old@customer.example"])
    sendgrid = (b'[{"email": "angry@customer.example", "event": "spamreport", "timestamp": 1765000000},'
                b' {"email": "old@customer.example", "event": "bounce", "type": "bounce",'
                b' "reason": "550 5.1.1 unknown user"},'
                b' {"email": "busy@customer.example", "event": "bounce", "type": "blocked"}]')
    unsigned = httpx.post(url, content=sendgrid, headers={"Content-Type": "application/json"})
    assert unsigned.status_code == 403
    answer = httpx.post(url, content=sendgrid, headers={"Content-Type": "application/json",
                                                        "X-Optflow-Signature": sign_webhook_body(EVENTS_SECRET,
                                                                                                 sendgrid)})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"format": "sendgrid", "bounced": 1, "complained": 1, "unchanged": 0, "invalid": 0}
    with org.client() as agent:
        states = {c["id"]: {k["channel"]: k["state"] for k in c["consents"]}
                  for c in (agent.get(f"{API}/contacts/{x['id']}").json() for x in (complainer, bouncer))}
        assert states[complainer["id"]]["email"] == "opted_out"
        assert states[bouncer["id"]]["email"] == "opted_in"
        for contact, code in ((complainer, "opted_out"), (bouncer, "bounced")):
            refused = send(agent, contact, "email")
            assert refused.status_code == 409 and error_code(refused) == code
    garbage = b'{"hello": "world"}'
    unknown = httpx.post(url, content=garbage, headers={"X-Optflow-Signature": sign_webhook_body(EVENTS_SECRET,
                                                                                                  garbage)})
    assert unknown.status_code == 422


# ------------------------------------------------------------------------------ diallers


def test_a_dialler_checks_and_records_calls_through_a_seven_in_seven_week(
        signals_server: Server, signals_library: Library) -> None:
    org = api_org(signals_server, signals_library, preset="debt_collection")
    number = fresh_number()
    now = datetime.now(UTC).replace(microsecond=0)
    week_ago = now - timedelta(days=6, hours=1)
    with org.client() as dialler:
        contact = contact_opted_in(dialler, "call", phones=[number])

        def check(at: datetime | None = None) -> dict[str, Any]:
            body: dict[str, Any] = {"contact_id": contact["id"], "channel": "call", "purpose": "transactional"}
            if at is not None:
                body["at"] = at.isoformat()
            answer = dialler.post(f"{API}/checks", json=body)
            assert answer.status_code == 200, answer.text
            return dict(answer.json())

        assert check()["decision"] == "allow"
        for day in range(7):  # one call a day, the first a little over six days ago
            placed = week_ago + timedelta(days=day)
            answer = dialler.post(f"{API}/attempts", json={"number": number, "outcome": "no_answer",
                                                           "placed_at": placed.isoformat()})
            assert answer.status_code == 201, answer.text
            assert answer.json()["contact_id"] == contact["id"]
        eighth = check()
        assert eighth["decision"] == "defer" and eighth["code"] == "frequency_cap"
        assert datetime.fromisoformat(eighth["until"]) == week_ago + timedelta(days=7)
        assert "reg_f_7_in_7" in eighth["reason"]
        assert check(week_ago + timedelta(days=7, seconds=-1))["decision"] == "defer"
        assert check(week_ago + timedelta(days=7))["decision"] == "allow"

        future = dialler.post(f"{API}/attempts", json={"number": number, "outcome": "busy",
                                                       "placed_at": (now + timedelta(hours=1)).isoformat()})
        assert future.status_code == 422
        stop = dialler.post(f"{API}/attempts", json={"contact_id": contact["id"], "outcome": "do_not_call",
                                                     "note": "asked us not to call again"})
        assert stop.status_code == 201 and stop.json()["consent_state"] == "opted_out"
        denied = check(week_ago + timedelta(days=7))
        assert denied["decision"] == "deny" and denied["code"] == "opted_out"
        assert dialler.get(f"{API}/contacts/{contact['id']}").json()["do_not_call"] is True
    entries = [e for e in signals_library.ledger(org.org.id, number) if e["trigger"] == "opt_out"]
    assert [(e["channel"], e["method"], e["actor_kind"]) for e in entries] == [("call", "verbal", "agent")]


def test_a_check_names_what_is_wrong(signals_server: Server, shop: ApiOrg) -> None:
    with shop.client() as agent:
        for body, status in (({}, 422), ({"number": "not a number"}, 422), ({"contact_id": 2**62}, 404),
                             ({"number": "+14155550100", "channel": "email"}, 422),
                             ({"number": "+14155550100", "at": "2001-01-01T00:00:00Z"}, 422)):
            assert agent.post(f"{API}/checks", json=body).status_code == status, body
        unknown = agent.post(f"{API}/checks", json={"number": fresh_number()})
        assert unknown.status_code == 200
        assert (unknown.json()["decision"], unknown.json()["code"]) == ("deny", "no_consent")


def test_webhooks_refuse_odd_input_with_a_4xx(signals_server: Server, signals_library: Library) -> None:
    url = f"{signals_server.base_url}/webhooks/twilio/status"
    base = {"MessageSid": "SM" + "e" * 32, "MessageStatus": "delivered", "From": ORG_NUMBER, "To": fresh_number()}

    def signed_post(target: str, params: dict[str, str] | list[tuple[str, str]]) -> httpx.Response:
        """Signed over the first value of each field (a repeated field is refused before the check)."""
        pairs = list(params.items()) if isinstance(params, dict) else params
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(target, dict(reversed(pairs)))
        return httpx.post(target, content=urlencode(pairs), timeout=15, headers={
            "X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"})

    missing = {k: v for k, v in base.items() if k != "MessageSid"}
    assert signed_post(url, missing).status_code == 400
    repeated = [*base.items(), ("MessageStatus", "failed")]
    assert signed_post(url, repeated).status_code == 400
    assert signed_post(url + "?message=abc", base).status_code == 400
    assert signed_post(url + "?message=" + str(2**63), base).status_code == 400
    nul = {**base, "MessageSid": "SM\x00" + "e" * 30}
    assert signed_post(url, nul).status_code == 404

    org = api_org(signals_server, signals_library, email_events_secret=EVENTS_SECRET)
    events = f"{signals_server.base_url}/webhooks/email/{org.org.id}"
    for body in (b"\x00\xff\xfe", b"[1, 2]", b'{"events": {"type": "bounce"}}', b'{"type": "unsubscribe"}'):
        answer = httpx.post(events, content=body, headers={"X-Optflow-Signature": sign_webhook_body(EVENTS_SECRET,
                                                                                                    body)})
        assert answer.status_code == 422, (body, answer.text)
    assert httpx.post(f"{signals_server.base_url}/webhooks/email/999999", content=b"{}").status_code == 404


# ------------------------------------------------------------------------------ WhatsApp's window


def whatsapp_send(client: httpx.Client, contact: dict[str, Any], body: str = "", purpose: str = "conversational",
                  template: dict[str, Any] | None = None) -> httpx.Response:
    return client.post(f"{API}/messages", json={"contact_id": contact["id"], "channel": "whatsapp", "body": body,
                                                 "purpose": purpose, **({"template": template} if template else {})})


def test_a_whatsapp_conversation_across_the_24_hour_window_through_the_server(server: Server,
                                                                             library: Library) -> None:
    """The customer writes on WhatsApp through the signed webhook and an agent answers through the
    API. The server's clock is the real one, so the day passes in the database: the customer's
    message is moved back 25 hours, as it would stand a day later."""
    shop = api_org(server, library, whatsapp_templates={"appointment_reminder": "HX" + "0" * 32})
    number = fresh_number()

    def customer_writes(body: str) -> None:
        answer = server.twilio_post({"From": f"whatsapp:{number}", "To": f"whatsapp:{shop.org.number}", "Body": body,
                                     "MessageSid": server.next_sid(), "AccountSid": "AC" + "0" * 32})
        assert answer.status_code == 200, answer.text

    with shop.client() as agent:
        contact = contact_opted_in(agent, "whatsapp", phones=[number])
        never_wrote = whatsapp_send(agent, contact, "Big sale this weekend", "marketing")
        assert never_wrote.status_code == 409 and error_code(never_wrote) == "outside_whatsapp_window"

        customer_writes("When is my appointment?")
        assert whatsapp_send(agent, contact, "Tuesday at 9").status_code == 202

        inbound = (orm.messages.c.org_id == shop.org.id, orm.messages.c.channel == "whatsapp",
                   orm.messages.c.direction == "in")
        with library.system.engine.begin() as conn:  # a day later
            [(message_id, written)] = conn.execute(select(orm.messages.c.id, orm.messages.c.created_at)
                                                   .where(*inbound)).all()
            conn.execute(orm.messages.update().where(orm.messages.c.id == message_id)
                         .values(created_at=written - timedelta(hours=25)))
        late = whatsapp_send(agent, contact, "Reminder: Tuesday at 9")
        assert late.status_code == 409 and error_code(late) == "outside_whatsapp_window"
        template = {"name": "appointment_reminder", "variables": {"1": "Tuesday", "2": "9:00"}}
        assert whatsapp_send(agent, contact, template=template).status_code == 202
        unknown = whatsapp_send(agent, contact, template={"name": "weekend_promo", "variables": {}})
        assert unknown.status_code == 409 and error_code(unknown) == "template_not_approved"

        customer_writes("Thanks!")  # the window opens again
        assert whatsapp_send(agent, contact, "You're welcome").status_code == 202
