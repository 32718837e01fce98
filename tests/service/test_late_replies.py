"""Issue 10, hole 7: a reply nobody could get is not recorded as given. When the webhook's
caller has hung up, or the answer would leave later than the reply budget (Twilio waits 15 s),
the reply goes through the provider's API instead (an outbox row the dispatcher sends, within
the opt-out's 5-minute window), the webhook is answered with no reply, and
`opt_out_confirmation_sent` is set only once the provider accepted the confirmation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from sqlalchemy import select

from conftest import Clock, RecordingSender
from optflow.adapters import orm
from optflow.adapters.templates import Rendered, TemplateRenderer
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Channel, State
from optflow.entrypoints.inbound_batcher import InboundBatcher
from optflow.service_layer import admin
from optflow.service_layer.handlers import InboundResult

ORG_NUMBER = "+12025550123"
CUSTOMER = "+14155550142"
BUDGET = 10.0


class Monotonic:
    """The batcher's request clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SlowConfirmation(TemplateRenderer):
    """Rendering the opt-out confirmation takes `delay` seconds of the request clock: a stand-in
    for anything that makes handling a STOP outlast the reply budget."""

    def __init__(self, monotonic: Monotonic, delay: float) -> None:
        super().__init__(None)
        self.monotonic, self.delay = monotonic, delay

    def render(self, name: str, variables: Mapping[str, object], override: str | None = None,
               language: str = "en") -> Rendered:
        if name == "customer/opt_out_confirmation":
            self.monotonic.now += self.delay
        return super().render(name, variables, override, language)


@pytest.fixture
def monotonic() -> Monotonic:
    return Monotonic()


@pytest.fixture
def org(system: System) -> int:
    with system.bus.uow() as uow:
        org_id = admin.create_org(uow, "Acme", system.clock(), numbers=(ORG_NUMBER,),
                                  settings={"quiet_hours": False})
        uow.commit()
    system.bus.handle(c.CreateContact(org_id, name="Pat", phones=(CUSTOMER,)))
    return org_id


@pytest.fixture
async def batcher(system: System, monotonic: Monotonic) -> AsyncIterator[InboundBatcher]:
    batcher = InboundBatcher(system, reply_budget=BUDGET, monotonic=monotonic)
    batcher.start()
    yield batcher
    await batcher.close()


def stop(sid: str = "SM-late-stop") -> c.ReceiveInbound:
    return c.ReceiveInbound(Channel.TEXT, CUSTOMER, ORG_NUMBER, "STOP", provider_id=sid)


def confirmations(system: System) -> list[dict[str, Any]]:
    query = select(orm.messages).where(orm.messages.c.kind == "opt_out_confirmation").order_by(orm.messages.c.id)
    with system.engine.connect() as conn:
        return [dict(row) for row in conn.execute(query).mappings()]


def confirmation_sent(system: System, org: int) -> bool:
    with system.bus.uow(read_only=True) as uow:
        consent = uow.consents.get(org, CUSTOMER, Channel.TEXT)
    assert consent.state is State.OPTED_OUT
    return consent.opt_out_confirmation_sent


async def test_a_stop_answered_within_the_budget_carries_its_confirmation(
        system: System, org: int, batcher: InboundBatcher, monotonic: Monotonic, sender: RecordingSender) -> None:
    system.services.renderer = SlowConfirmation(monotonic, BUDGET - 1)
    result = await batcher.submit(stop())
    assert len(result.replies) == 1 and "START" in result.replies[0]
    [row] = confirmations(system)
    assert row["status"] == "replied" and confirmation_sent(system, org)
    assert system.dispatcher.run(system.clock()).sent == 0 and sender.sent == []


async def test_a_stop_that_outlasts_the_budget_is_confirmed_through_the_api(
        system: System, org: int, batcher: InboundBatcher, monotonic: Monotonic, sender: RecordingSender,
        clock: Clock) -> None:
    system.services.renderer = SlowConfirmation(monotonic, BUDGET + 1)
    result = await batcher.submit(stop())
    assert result.replies == () and result.state is State.OPTED_OUT  # the webhook answers no reply
    [row] = confirmations(system)
    assert (row["status"], row["sent_at"]) == ("queued", None)
    assert not confirmation_sent(system, org)  # nobody has it yet

    clock.advance(seconds=2)  # the next outbox tick
    assert system.dispatcher.run(clock()).sent == 1
    [message] = sender.to(CUSTOMER)
    assert message.body == row["body"] and "START" in message.body
    [row] = confirmations(system)
    assert row["status"] == "sent" and confirmation_sent(system, org)

    retry = await batcher.submit(stop())  # Twilio's retry of the same webhook
    assert retry.duplicate and retry.replies == ()  # the reply is not given a second time
    assert len(confirmations(system)) == 1


async def test_a_stop_whose_caller_hung_up_is_confirmed_through_the_api(
        system: System, org: int, batcher: InboundBatcher, sender: RecordingSender) -> None:
    request: asyncio.Task[InboundResult] = asyncio.create_task(batcher.submit(stop()))
    await asyncio.sleep(0)  # queued
    request.cancel()  # the client went away before the group commit
    await batcher.close()
    [row] = confirmations(system)
    assert row["status"] == "queued" and not confirmation_sent(system, org)
    assert system.dispatcher.run(system.clock()).sent == 1
    assert len(sender.to(CUSTOMER)) == 1 and confirmation_sent(system, org)


async def test_a_late_confirmation_the_dispatcher_cannot_send_within_five_minutes_is_never_counted_as_sent(
        system: System, org: int, batcher: InboundBatcher, monotonic: Monotonic, sender: RecordingSender,
        clock: Clock) -> None:
    system.services.renderer = SlowConfirmation(monotonic, BUDGET + 1)
    await batcher.submit(stop())
    clock.advance(minutes=6)  # the outbox was down past the opt-out's confirmation window
    assert system.dispatcher.run(clock()).denied == 1
    [row] = confirmations(system)
    assert row["status"] == "denied" and sender.sent == [] and not confirmation_sent(system, org)


async def test_a_second_stop_while_the_first_confirmation_waits_for_the_api_gets_one_confirmation_in_all(
        system: System, org: int, batcher: InboundBatcher, monotonic: Monotonic, sender: RecordingSender,
        clock: Clock) -> None:
    """The first STOP's confirmation is queued for the API (late); the customer texts STOP again
    before the outbox ran, and that one is answered in the webhook. The queued one must then not
    go as well: one confirmation in all."""
    system.services.renderer = SlowConfirmation(monotonic, BUDGET + 1)
    first = await batcher.submit(stop("SM-first"))
    assert first.replies == ()
    system.services.renderer = TemplateRenderer(None)
    second = await batcher.submit(stop("SM-second"))
    assert len(second.replies) == 1 and confirmation_sent(system, org)
    clock.advance(seconds=2)
    system.dispatcher.run(clock())
    assert sender.to(CUSTOMER) == []
    assert [row["status"] for row in confirmations(system)] == ["denied", "replied"]


async def test_an_agents_opt_out_confirmation_counts_as_sent_once_the_provider_took_it(
        system: System, org: int, sender: RecordingSender, clock: Clock) -> None:
    from optflow.domain.model import Actor, ActorKind

    with system.bus.uow() as uow:
        contact = uow.contacts.find_by_address(org, CUSTOMER)
    assert contact is not None
    agent = Actor(ActorKind.AGENT, "1", "agent")
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="verbal"))
    system.bus.handle(c.OptOut(org, contact, Channel.TEXT, agent, evidence="asked on the phone"))
    assert not confirmation_sent(system, org)  # queued, not sent: nobody has it yet
    system.dispatcher.run(clock())
    assert len(sender.to(CUSTOMER)) == 1 and confirmation_sent(system, org)
