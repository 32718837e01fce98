"""Consent events out (issue 12, item 1): every ledger entry (consent change, DND, marketing
permission) becomes an event for each of the org's endpoints that wants it, queued in the
transaction of the change and delivered by the webhook dispatcher: signed the Standard Webhooks
way with the endpoint's own secret (the receiver checks it with the `standardwebhooks` library),
retried with backoff for a day, in order per contact, logged, and redeliverable. On SQLite and on
PostgreSQL, against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import base64
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from sqlalchemy import Engine, text, update

from conftest import ORG_NUMBER, TEST_PIN_KEY, Clock, RecordingSender, make_system, new_org
from fakes.event_receiver import EventReceiver
from optflow.adapters import orm
from optflow.adapters.templates import Rendered, TemplateRenderer
from optflow.bootstrap import System, bootstrap
from optflow.config import Config
from optflow.domain import commands as c
from optflow.domain.languages import DEFAULT_LANGUAGE
from optflow.domain.model import Actor, ActorKind, Channel, DomainError, NotFound
from optflow.domain.records import DeliveryStatus, WebhookDelivery
from optflow.service_layer import event_endpoints as endpoints
from optflow.service_layer.webhook_dispatcher import WebhookDispatcher, retry_delay

PHONE = "+14155552671"
OTHER_PHONE = "+14155552672"
AGENT = Actor(ActorKind.AGENT, "7")
BASE = timedelta(seconds=10)
JITTER = 0.25


@pytest.fixture
def clock() -> Clock:
    # The receiver checks signatures with the library, which refuses a timestamp more than five
    # minutes from the wall clock: this system's clock starts at the wall clock's minute.
    return Clock(datetime.now(UTC).replace(second=0, microsecond=0))


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender, tmp_path: Path) -> Iterator[System]:
    (tmp_path / "flows").mkdir()
    system = make_system(engine, clock, sender, tmp_path / "flows")
    system.webhooks = WebhookDispatcher(system.uows, system.webhooks.poster, retry_base=BASE, jitter=lambda: JITTER)
    yield system
    system.close()


@pytest.fixture
def receiver() -> Iterator[EventReceiver]:
    with EventReceiver() as fake:
        yield fake


def register(system: System, org: int, receiver: EventReceiver, types: tuple[str, ...] = (
        "consent.changed", "dnd.changed", "marketing.changed")) -> int:
    with system.bus.uow() as uow:
        endpoint = endpoints.add_endpoint(uow, org, receiver.url, types, system.clock(), "the CRM")
        uow.commit()
    receiver.secret = system.webhooks.poster.endpoint_secret(endpoint.secret_salt)
    return endpoint.id


def ledger(system: System, org: int) -> list[dict[str, object]]:
    with system.bus.uow(read_only=True) as uow:
        return uow.ledger.entries(org)


def deliveries(system: System, org: int, endpoint_id: int) -> list[WebhookDelivery]:
    with system.bus.uow(read_only=True) as uow:
        return [log.delivery for log in reversed(endpoints.delivery_log(uow, org, endpoint_id))]


def run_until_idle(system: System, clock: Clock, rounds: int = 40) -> None:
    """Run the dispatcher, moving the clock to each next retry, until nothing is left queued."""
    for _ in range(rounds):
        system.webhooks.run(clock())
        with system.bus.uow() as uow:  # what could be claimed next, and when (rolled back: claims nothing)
            due = [row.next_attempt_at for row in uow.webhook_deliveries.claim_due(
                clock() + timedelta(days=2), clock(), 1000, False)]
            uow.rollback()
        if not due:
            return
        clock.now = max(clock(), min(due))
    raise AssertionError("deliveries still queued")


def test_every_ledger_entry_becomes_a_signed_event_with_its_sequence(
        system: System, clock: Clock, receiver: EventReceiver) -> None:
    org = new_org(system)
    endpoint_id = register(system, org, receiver)
    with EventReceiver() as marketing_only:
        marketing_endpoint = register(system, org, marketing_only, ("marketing.changed",))
        contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
        with system.bus.uow() as uow:
            uow.conn.execute(update(orm.contacts).where(orm.contacts.c.id == contact).values(external_id="CRM-42"))
            uow.commit()
        system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, AGENT, method="web_form",
                                        evidence="form 17", occurred_at=clock() - timedelta(days=1)))
        system.bus.handle(c.SetDnd(org, contact, AGENT, on=True, channels=(Channel.CALL,)))
        system.bus.handle(c.SetMarketing(org, contact, AGENT, allowed=False))
        system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SM-stop"))
        assert receiver.received == []  # queued with the changes; nobody called yet

        report = system.webhooks.run(clock())
        assert report.delivered == len(ledger(system, org)) + 1 and report.retried == 0
        [marketing] = marketing_only.delivered()
    entries = ledger(system, org)
    events = receiver.delivered()
    assert all(event.verified for event in receiver.received + marketing_only.received)
    assert [event.json()["data"]["ledger_seq"] for event in events] == [entry["seq"] for entry in entries]
    assert [event.webhook_id for event in events] == [f"optflow-ledger-{org}-{entry['seq']}" for entry in entries]
    types = [event.json()["type"] for event in events]
    assert types == ["consent.changed", "dnd.changed", "marketing.changed", "consent.changed"]
    opt_in, dnd, _, stop = (event.json() for event in events)
    assert opt_in["data"] == {
        "org_id": org, "ledger_seq": entries[0]["seq"], "contact": {"id": contact, "external_id": "CRM-42"},
        "channel": "text", "address": PHONE, "from_state": "unknown", "to_state": "opted_in",
        "trigger": entries[0]["trigger"], "method": "web_form", "actor": {"kind": "agent", "id": "7"},
        "evidence": "form 17", "source_message_id": None,
        "occurred_at": (clock() - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
        "recorded_at": clock().isoformat().replace("+00:00", "Z")}
    assert dnd["data"]["dnd"] == {"all_channels": False, "channels": ["call"]}
    assert (stop["data"]["from_state"], stop["data"]["to_state"], stop["data"]["method"],
            stop["data"]["actor"]["kind"], stop["data"]["source_message_id"]) == (
        "opted_in", "opted_out", entries[-1]["method"], "customer", "SM-stop")
    assert marketing.json()["data"]["marketing_allowed"] is False
    assert marketing.json()["data"]["ledger_seq"] == entries[2]["seq"]
    assert [row.status for row in deliveries(system, org, endpoint_id)] == ["delivered"] * 4
    assert len(deliveries(system, org, marketing_endpoint)) == 1


def test_a_failing_receiver_gets_each_contacts_events_in_ledger_order(
        system: System, clock: Clock, receiver: EventReceiver) -> None:
    receiver.failures = 2  # every event: two 500s, then accepted
    org = new_org(system)
    register(system, org, receiver)
    sam = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    kim = system.bus.handle(c.CreateContact(org, name="Kim", phones=(OTHER_PHONE,))).contact_id
    for contact in (sam, kim, sam, kim, sam):
        system.bus.handle(c.SetMarketing(org, contact, AGENT, allowed=contact == kim))
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SM-1"))

    run_until_idle(system, clock)

    entries = ledger(system, org)
    for contact in (sam, kim):
        seqs = [entry["seq"] for entry in entries if entry["contact_id"] == contact]
        tried = [event.json()["data"]["ledger_seq"] for event in receiver.received
                 if event.json()["data"]["contact"]["id"] == contact]
        # Each event tried three times, and never before the contact's earlier event got through.
        assert tried == [seq for seq in seqs for _ in range(3)]
    delivered = [event.json()["data"]["ledger_seq"] for event in receiver.delivered()]
    assert sorted(delivered) == [entry["seq"] for entry in entries]
    # One contact's retries do not hold up the other's events.
    first_kim = next(i for i, event in enumerate(receiver.received) if event.json()["data"]["contact"]["id"] == kim)
    first_sam_delivered = next(i for i, event in enumerate(receiver.received)
                               if event.json()["data"]["contact"]["id"] == sam and event.answered == 200)
    assert first_kim < first_sam_delivered
    assert all(event.verified for event in receiver.received)


def test_an_event_is_retried_with_backoff_for_a_day_then_failed_and_can_be_redelivered(
        system: System, clock: Clock, receiver: EventReceiver) -> None:
    receiver.failures = 10**6
    org = new_org(system)
    endpoint_id = register(system, org, receiver)
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.SetMarketing(org, contact, AGENT, allowed=False))
    system.bus.handle(c.SetMarketing(org, contact, AGENT, allowed=True))
    queued_at = clock()

    system.webhooks.run(clock())
    [first, second] = deliveries(system, org, endpoint_id)
    assert (first.status, first.attempts, first.last_status) == ("queued", 1, 500)
    assert first.next_attempt_at == queued_at + retry_delay(1, BASE, JITTER)
    assert (second.status, second.attempts) == ("queued", 0)  # waits for the first
    assert first.give_up_at == queued_at + timedelta(days=1)

    run_until_idle(system, clock, rounds=200)
    [first, second] = deliveries(system, org, endpoint_id)
    assert first.status == second.status == DeliveryStatus.FAILED
    assert first.last_error is not None and first.last_error.startswith(f"gave up after {first.attempts} attempts")
    with system.bus.uow(read_only=True) as uow:
        [log, _] = endpoints.delivery_log(uow, org, endpoint_id)
        later = endpoints.delivery_log(uow, org, endpoint_id)[1]
    assert later.delivery.id == first.id
    attempts = later.attempts
    assert [a.attempt for a in attempts] == list(range(1, first.attempts + 1))
    assert {a.status_code for a in attempts} == {500} and {a.error for a in attempts} == {"HTTP 500"}
    assert all(event.signed for event in receiver.received)
    assert attempts[0].attempted_at == queued_at and attempts[-1].attempted_at == queued_at + timedelta(days=1)
    gaps = [b.attempted_at - a.attempted_at for a, b in pairwise(attempts[:-1])]
    assert gaps == sorted(gaps) and gaps[-1] == timedelta(hours=1) * (0.5 + 0.5 * JITTER)  # capped backoff
    # The second waited its turn; its day (from the change) was over by then: one try, then failed.
    assert log.delivery.id == second.id and [a.attempted_at for a in log.attempts] == [attempts[-1].attempted_at]

    receiver.failures = 0
    with system.bus.uow() as uow:
        again = endpoints.redeliver(uow, org, first.id, clock())
        uow.commit()
    assert (again.delivery.status, again.delivery.event_id, again.delivery.payload) == (
        "queued", first.event_id, first.payload)
    assert again.delivery.give_up_at == clock() + timedelta(days=1)
    with system.bus.uow() as uow, pytest.raises(DomainError, match="still queued"):
        endpoints.redeliver(uow, org, again.delivery.id, clock())
    system.webhooks.run(clock())
    [delivered] = receiver.delivered()
    assert (delivered.webhook_id, delivered.body.decode(), delivered.signed) == (
        first.event_id, first.payload, True)
    with system.bus.uow() as uow:  # a delivered event may be sent again too
        assert endpoints.redeliver(uow, org, again.delivery.id, clock()).delivery.status == "queued"
        with pytest.raises(NotFound):
            endpoints.redeliver(uow, org + 1, again.delivery.id, clock())


class BrokenRenderer(TemplateRenderer):
    """Every template fails: the inbound handler crashes, and the opt-out fallback takes over."""

    def render(self, name: str, variables: Mapping[str, object], override: str | None = None,
               language: str = DEFAULT_LANGUAGE) -> Rendered:
        raise RuntimeError("the template engine fell over")


def test_an_opt_out_saved_by_the_fallback_is_an_event_too(
        system: System, clock: Clock, receiver: EventReceiver) -> None:
    org = new_org(system)
    endpoint_id = register(system, org, receiver, ("consent.changed",))
    system.bus.handle(c.CreateContact(org, name="Pat", phones=(PHONE,)))
    system.services.renderer = BrokenRenderer(system.config.template_dir)
    with pytest.raises(RuntimeError, match="fell over"):
        system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SM-broken"))
    [entry] = ledger(system, org)
    assert entry["to_state"] == "opted_out"
    [row] = deliveries(system, org, endpoint_id)
    assert row.event_id == f"optflow-ledger-{org}-{entry['seq']}"
    system.webhooks.run(clock())
    [event] = receiver.delivered()
    assert event.verified and event.json()["data"]["to_state"] == "opted_out"


def test_a_refused_change_and_another_orgs_changes_queue_nothing(
        system: System, clock: Clock, receiver: EventReceiver) -> None:
    org = new_org(system)
    other = new_org(system, "Other", "+12025550188")
    endpoint_id = register(system, org, receiver)
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    with pytest.raises(DomainError):  # no such method: refused, rolled back
        system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, AGENT, method="telepathy"))
    elsewhere = system.bus.handle(c.CreateContact(other, name="Kim", phones=(OTHER_PHONE,))).contact_id
    system.bus.handle(c.SetMarketing(other, elsewhere, AGENT, allowed=False))
    assert ledger(system, org) == [] and len(ledger(system, other)) == 1
    assert deliveries(system, org, endpoint_id) == []
    with system.bus.uow(read_only=True) as uow, pytest.raises(NotFound):
        endpoints.delivery_log(uow, other, endpoint_id)


def test_an_event_that_cannot_be_queued_never_stops_the_opt_out(
        system: System, clock: Clock, receiver: EventReceiver) -> None:
    org = new_org(system)
    register(system, org, receiver)
    system.bus.handle(c.CreateContact(org, name="Pat", phones=(PHONE,)))
    with system.engine.begin() as conn:  # the outbox refuses every row (a stand-in for a broken table)
        conn.execute(text("DROP TABLE webhook_attempts"))
        conn.execute(text("DROP TABLE webhook_deliveries"))
        conn.execute(text("CREATE TABLE webhook_deliveries (id INTEGER PRIMARY KEY, org_id INTEGER NOT NULL "
                          "CHECK (org_id < 0))"))
    try:
        reply = system.bus.handle(c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SM-stop"))
        with system.bus.uow(read_only=True) as uow:
            assert uow.consents.get(org, PHONE, Channel.TEXT).state == "opted_out"
        assert ledger(system, org)[-1]["to_state"] == "opted_out"
        assert reply.replies  # handled in full (the confirmation), not only by the fallback
    finally:  # the schema as it was, for the next test on this database
        with system.engine.begin() as conn:
            conn.execute(text("DROP TABLE webhook_deliveries"))
            orm.webhook_deliveries.create(conn)
            orm.webhook_attempts.create(conn)


def test_an_endpoints_secret_is_not_in_the_database_and_every_process_derives_the_same(
        sqlite_engine: Engine, clock: Clock, sender: RecordingSender, tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    first = make_system(sqlite_engine, clock, sender, tmp_path / "flows")
    org = new_org(first)
    with first.bus.uow() as uow:
        endpoint = endpoints.add_endpoint(uow, org, "https://crm.example/hooks", ("consent.changed",), clock())
        uow.commit()
    secret = first.webhooks.poster.endpoint_secret(endpoint.secret_salt)
    key_file = Path(str(sqlite_engine.url.database) + "-webhook.key")
    assert key_file.stat().st_mode & 0o077 == 0  # created readable by its owner only

    second = make_system(sqlite_engine, clock, sender, tmp_path / "flows")  # another process, same files
    assert second.webhooks.poster.endpoint_secret(endpoint.secret_salt) == secret
    database = Path(str(sqlite_engine.url.database)).read_bytes()
    key = secret.removeprefix("whsec_").encode()
    assert key not in database and base64.b64decode(key) not in database

    other_key = bootstrap(Config(database_url=str(sqlite_engine.url), flows_dir=tmp_path / "flows",
                                 secret="test-secret", pin_key=TEST_PIN_KEY, webhook_key="another-key-" + "0" * 32),
                          clock=clock, sender=sender, engine=sqlite_engine)
    assert other_key.webhooks.poster.endpoint_secret(endpoint.secret_salt) != secret
    with first.bus.uow() as uow:
        rotated = endpoints.rotate_secret(uow, org, endpoint.id)
        uow.commit()
    assert first.webhooks.poster.endpoint_secret(rotated.secret_salt) != secret
