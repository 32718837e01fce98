"""Flow `webhook` steps go through an outbox: the step writes a row in its own transaction and
makes no HTTP call; the scheduler's `WebhookDispatcher` POSTs it with no transaction open, signed
the Standard Webhooks way, retried with backoff and jitter, its outcome recorded. On SQLite and on
PostgreSQL, against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from conftest import Clock, RecordingSender, make_system
from fakes.webhook_receiver import FakeWebhookReceiver
from optflow.adapters.webhook_poster import WebhookPoster
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.records import WebhookDelivery
from optflow.service_layer import admin
from optflow.service_layer.webhook_dispatcher import WebhookDispatcher, retry_delay, webhook_id

SECRET = "whsec_" + "c2VjcmV0LWZvci1mbG93LXdlYmhvb2stdGVzdHMtMDEyMw=="
BASE = timedelta(seconds=10)
JITTER = 0.25


def write_flow(directory: Path, url: str) -> Path:
    directory.mkdir()
    (directory / "tell_crm.yaml").write_text(f"""
name: tell_crm
description: Tells the CRM about a shipped order.
trigger:
  event: order.shipped
purpose: transactional
steps:
  - id: notify
    webhook:
      url: {url}
      body: {{status: shipped, source: optflow}}
""", encoding="utf-8")
    return directory


@pytest.fixture
def receiver(engine: Engine) -> Iterator[FakeWebhookReceiver]:
    # While a request is open: how many database connections are checked out, in any thread.
    with FakeWebhookReceiver(SECRET, statuses=[500], on_request=engine.pool.checkedout) as fake:
        yield fake


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender, receiver: FakeWebhookReceiver,
           tmp_path: Path) -> Iterator[System]:
    system = make_system(engine, clock, sender, write_flow(tmp_path / "flows", receiver.url))
    system.webhooks.poster.close()
    system.webhooks = WebhookDispatcher(system.uows, WebhookPoster(SECRET), retry_base=BASE, jitter=lambda: JITTER)
    yield system
    system.webhooks.poster.close()


def ship_order(system: System, clock: Clock) -> int:
    with system.bus.uow() as uow:
        org_id = admin.create_org(uow, "Acme", clock(), numbers=("+12025550123",))
        uow.commit()
    contact = system.bus.handle(c.CreateContact(org_id, name="Pat", phones=("+14155550142",))).contact_id
    [enrollment_id] = system.bus.handle(c.RecordEvent(org_id, "order.shipped", contact, {"order": "A-1"})
                                        ).enrollment_ids
    return int(enrollment_id)


def deliveries(system: System, enrollment_id: int) -> list[WebhookDelivery]:
    with system.bus.uow(read_only=True) as uow:
        return uow.webhook_deliveries.for_enrollment(enrollment_id)


def test_the_step_queues_the_webhook_and_calls_nobody(system: System, clock: Clock,
                                                       receiver: FakeWebhookReceiver) -> None:
    enrollment_id = ship_order(system, clock)
    [row] = deliveries(system, enrollment_id)
    assert (row.status, row.attempts, row.url) == ("queued", 0, receiver.url)
    assert receiver.received == [] and not receiver.arrived.is_set()
    with system.bus.uow(read_only=True) as uow:
        [*_, step] = uow.enrollments.history(enrollment_id)
    assert step["outcome"] == f"webhook queued (delivery {row.id})"


def test_a_500_is_retried_after_backoff_with_jitter_then_delivered_signed(
        system: System, clock: Clock, receiver: FakeWebhookReceiver) -> None:
    enrollment_id = ship_order(system, clock)
    first_try = clock()
    report = system.webhooks.run(first_try)
    assert (report.delivered, report.retried) == (0, 1)
    [row] = deliveries(system, enrollment_id)
    retry_at = first_try + retry_delay(1, BASE, JITTER)
    assert (row.status, row.attempts, row.last_status) == ("queued", 1, 500)
    assert row.next_attempt_at == retry_at and row.delivered_at is None

    assert system.webhooks.run(retry_at - timedelta(seconds=1)).handled == 0  # not due yet
    assert system.webhooks.run(retry_at).delivered == 1
    [row] = deliveries(system, enrollment_id)
    assert (row.status, row.attempts, row.last_status, row.delivered_at) == (
        "delivered", 2, 200, retry_at)
    assert [r.answered for r in receiver.received] == [500, 200]
    assert all(r.signature_valid for r in receiver.received)
    assert {r.webhook_id for r in receiver.received} == {webhook_id(row.id)}
    assert receiver.received[1].json() == {"flow": "tell_crm", "enrollment_id": enrollment_id,
                                           "contact_id": receiver.received[1].json()["contact_id"],
                                           "event": {"kind": "event", "name": "order.shipped", "order": "A-1"},
                                           "status": "shipped", "source": "optflow"}
    assert system.webhooks.run(retry_at + timedelta(hours=2)).handled == 0  # delivered once, done


def test_no_database_connection_is_held_while_the_receiver_is_called(
        system: System, clock: Clock, receiver: FakeWebhookReceiver) -> None:
    ship_order(system, clock)
    system.webhooks.run(clock())
    system.webhooks.run(clock() + timedelta(hours=1))
    assert receiver.seen_during_requests == [0, 0]


def test_it_gives_up_after_the_last_attempt(system: System, clock: Clock, receiver: FakeWebhookReceiver) -> None:
    enrollment_id = ship_order(system, clock)
    receiver.statuses = [503] * 3
    system.webhooks.max_attempts = 3
    for hour in range(3):
        system.webhooks.run(clock() + timedelta(hours=hour))
    [row] = deliveries(system, enrollment_id)
    assert (row.status, row.attempts, row.last_status) == ("failed", 3, 503)
    assert "gave up after 3 attempts" in str(row.last_error)
    assert system.webhooks.run(clock() + timedelta(days=1)).handled == 0


def test_a_receiver_that_cannot_be_reached_is_retried(system: System, clock: Clock,
                                                      receiver: FakeWebhookReceiver) -> None:
    enrollment_id = ship_order(system, clock)
    receiver.stop()
    assert system.webhooks.run(clock()).retried == 1
    [row] = deliveries(system, enrollment_id)
    assert (row.status, row.last_status) == ("queued", None)
    assert "ConnectError" in str(row.last_error)


def test_the_retry_delay_doubles_and_its_jitter_stays_in_the_upper_half() -> None:
    assert [retry_delay(n, BASE, 0.0) for n in (1, 2, 3)] == [BASE / 2, BASE, BASE * 2]
    assert retry_delay(1, BASE, 0.999) < BASE and retry_delay(1, BASE, 0.5) == BASE * 0.75
    assert retry_delay(30, BASE, 0.0) == timedelta(minutes=30)  # capped at an hour, halved
