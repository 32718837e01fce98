"""The group-commit batcher on a real SQLite file: many inbound messages, one transaction, and
every outcome (result, refusal, crash, opt-out fallback) delivered only after the commit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import pytest
from sqlalchemy import event, func, select

from optflow.adapters import orm
from optflow.adapters.templates import Rendered, TemplateRenderer
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Channel, Intent, NotFound, State
from optflow.entrypoints.inbound_batcher import InboundBatcher
from optflow.service_layer import admin
from optflow.service_layer.handlers import InboundResult

ORG_NUMBER = "+12025550123"
CRASHING_NAME = "Crash Test"


class CrashingRenderer(TemplateRenderer):
    """The real renderer, except that any message to the contact named `CRASHING_NAME` blows up:
    a stand-in for a bug anywhere in the reply pipeline."""

    def render(self, name: str, variables: Mapping[str, object], override: str | None = None,
               language: str = "en") -> Rendered:
        if variables.get("contact_name") == CRASHING_NAME:
            raise RuntimeError("the template engine fell over")
        return super().render(name, variables, override, language)


def phone(n: int) -> str:
    return f"+1415555{n:04d}"


@pytest.fixture
def org(system: System) -> int:
    with system.bus.uow() as uow:
        org_id = admin.create_org(uow, "Acme", system.clock(), numbers=(ORG_NUMBER,),
                                  settings={"program_name": "Acme alerts", "quiet_hours": False})
        uow.commit()
    return org_id


@pytest.fixture
def contacts(system: System, org: int) -> list[str]:
    numbers = [phone(n) for n in range(1, 13)]
    for i, number in enumerate(numbers):
        system.bus.handle(c.CreateContact(org, name=CRASHING_NAME if i == 0 else f"Customer {i}", phones=(number,)))
    system.services.renderer = CrashingRenderer(system.config.template_dir)
    return numbers


@pytest.fixture
async def batcher(system: System) -> AsyncIterator[InboundBatcher]:
    batcher = InboundBatcher(system)
    batcher.start()
    yield batcher
    await batcher.close()


def text(frm: str, body: str, sid: str, to: str = ORG_NUMBER) -> c.ReceiveInbound:
    return c.ReceiveInbound(Channel.TEXT, frm, to, body, provider_id=sid)


async def submit_all(batcher: InboundBatcher, commands: list[c.ReceiveInbound]) -> list[InboundResult | BaseException]:
    return list(await asyncio.gather(*(batcher.submit(cmd) for cmd in commands), return_exceptions=True))


def count(system: System, table: Any, *where: Any) -> int:
    with system.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one())


def inbound(system: System, sid: str) -> int:
    return count(system, orm.messages, orm.messages.c.direction == "in", orm.messages.c.provider_id == sid)


def consent_state(system: System, org: int, address: str) -> State:
    with system.bus.uow() as uow:
        return uow.consents.get(org, address, Channel.TEXT).state


def watch_commits(system: System, seen: Callable[[], None]) -> Callable[[], None]:
    """Call `seen` at every durable commit of the engine (not at savepoint releases); returns
    the function that stops watching."""

    def on_commit(conn: Any) -> None:
        seen()

    event.listen(system.engine, "commit", on_commit)
    return lambda: event.remove(system.engine, "commit", on_commit)


async def test_concurrent_messages_are_committed_together_and_answered_each(
        system: System, org: int, contacts: list[str], batcher: InboundBatcher) -> None:
    bodies = ["STOP", "YES", "HELP", "see you at 5", "Unsubscribe", "yes", "info", "thanks"]
    commands = [text(number, bodies[i % len(bodies)], f"SM{i:032d}") for i, number in enumerate(contacts[1:9])]

    results = await submit_all(batcher, commands)

    assert batcher.batches == 1 and batcher.messages == len(commands)
    intents = [r.intent for r in results if isinstance(r, InboundResult)]
    assert intents == [Intent.OPT_OUT, Intent.OPT_IN, Intent.HELP, Intent.OTHER,
                       Intent.OPT_OUT, Intent.OPT_IN, Intent.HELP, Intent.OTHER]
    for command in commands:
        assert inbound(system, command.provider_id or "") == 1
    assert consent_state(system, org, contacts[1]) is State.OPTED_OUT
    assert consent_state(system, org, contacts[2]) is State.OPTED_IN
    opted_out = results[0]
    assert isinstance(opted_out, InboundResult) and opted_out.replies  # the confirmation goes in the reply


async def test_a_duplicate_message_sid_in_the_same_batch_is_handled_once(
        system: System, org: int, contacts: list[str], batcher: InboundBatcher) -> None:
    first, again = await submit_all(batcher, [text(contacts[1], "STOP", "SMdup"), text(contacts[1], "STOP", "SMdup")])

    assert isinstance(first, InboundResult) and isinstance(again, InboundResult)
    assert batcher.batches == 1
    assert not first.duplicate and again.duplicate
    assert again.message_id == first.message_id and again.replies == first.replies
    assert inbound(system, "SMdup") == 1
    assert count(system, orm.ledger, orm.ledger.c.address == contacts[1]) == 1


async def test_a_refused_or_crashing_message_fails_alone(
        system: System, org: int, contacts: list[str], batcher: InboundBatcher) -> None:
    commands = [
        text(contacts[1], "HELP", "SMok1"),
        text(contacts[2], "hello", "SMunknown", to="+12025550999"),  # no org owns that number
        text(contacts[0], "HELP", "SMcrash"),  # the reply pipeline crashes for this contact
        text(contacts[3], "STOP", "SMok2"),
    ]

    ok1, unknown, crashed, ok2 = await submit_all(batcher, commands)

    assert batcher.batches == 1
    assert isinstance(unknown, NotFound) and unknown.code == "unknown_number"
    assert isinstance(crashed, RuntimeError)
    assert isinstance(ok1, InboundResult) and ok1.intent is Intent.HELP
    assert isinstance(ok2, InboundResult) and consent_state(system, org, contacts[3]) is State.OPTED_OUT
    assert [inbound(system, sid) for sid in ("SMok1", "SMunknown", "SMcrash", "SMok2")] == [1, 0, 0, 1]


async def test_an_opt_out_whose_pipeline_crashes_is_still_recorded(
        system: System, org: int, contacts: list[str], batcher: InboundBatcher) -> None:
    crashed, other = await submit_all(batcher, [text(contacts[0], "please stop texting me", "SMstop"),
                                               text(contacts[1], "YES", "SMyes")])

    assert isinstance(crashed, RuntimeError)  # the webhook answers an error, so the provider retries
    assert consent_state(system, org, contacts[0]) is State.OPTED_OUT
    ledger = count(system, orm.ledger, orm.ledger.c.address == contacts[0], orm.ledger.c.to_state == "opted_out",
                   orm.ledger.c.source_message_id == "SMstop")
    assert ledger == 1
    assert isinstance(other, InboundResult) and consent_state(system, org, contacts[1]) is State.OPTED_IN
    assert batcher.batches == 1


class WatchedBatcher(InboundBatcher):
    """The real batcher, remembering the batch it is committing so a commit hook can look at it."""

    def __init__(self, bus: Any) -> None:
        super().__init__(bus)
        self.current: list[Any] = []

    def commit_batch(self, batch: list[Any], prerendered: Any = None) -> None:
        self.current = batch
        super().commit_batch(batch, prerendered)


async def test_no_message_is_answered_before_its_commit(system: System, org: int, contacts: list[str]) -> None:
    batcher = WatchedBatcher(system)
    batcher.start()
    answered_at_commit: list[int] = []
    stop = watch_commits(system, lambda: answered_at_commit.append(sum(p.future.done() for p in batcher.current)))
    try:
        commands = [text(number, "YES", f"SMack{i}") for i, number in enumerate(contacts[1:7])]
        results = await submit_all(batcher, commands)
    finally:
        stop()
        await batcher.close()

    assert answered_at_commit == [0]  # one commit, and not one answer was given before it
    assert all(isinstance(r, InboundResult) and not r.duplicate for r in results)


async def test_when_the_commit_fails_nothing_is_acknowledged(
        system: System, org: int, contacts: list[str], batcher: InboundBatcher) -> None:
    def refuse() -> None:
        raise OSError("disk full")

    stop = watch_commits(system, refuse)  # every commit fails: the batch's and each retry's
    try:
        results = await submit_all(batcher, [text(contacts[1], "YES", "SMf1"), text(contacts[2], "STOP", "SMf2")])
    finally:
        stop()

    assert all(isinstance(r, OSError) for r in results)
    assert inbound(system, "SMf1") == inbound(system, "SMf2") == 0
    assert consent_state(system, org, contacts[2]) is State.UNKNOWN


async def test_a_failed_group_commit_is_redone_message_by_message(
        system: System, org: int, contacts: list[str], batcher: InboundBatcher) -> None:
    # The batch's commit fails twice: at once, and again with a savepoint per command.
    failures = iter([OSError("transient"), OSError("transient")])

    def fail_twice() -> None:
        error = next(failures, None)
        if error is not None:
            raise error

    stop = watch_commits(system, fail_twice)
    try:
        results = await submit_all(batcher, [text(contacts[1], "YES", "SMr1"), text(contacts[2], "STOP", "SMr2"),
                                             text(contacts[2], "STOP", "SMr2")])
    finally:
        stop()

    assert batcher.batches == 0  # the group never committed; each message was handled on its own
    assert [isinstance(r, InboundResult) and r.duplicate for r in results] == [False, False, True]
    assert inbound(system, "SMr1") == inbound(system, "SMr2") == 1
    assert consent_state(system, org, contacts[2]) is State.OPTED_OUT


async def test_closing_handles_what_is_queued_and_later_messages_directly(
        system: System, org: int, contacts: list[str]) -> None:
    batcher = InboundBatcher(system)
    batcher.start()
    queued = asyncio.ensure_future(batcher.submit(text(contacts[1], "HELP", "SMq1")))
    await asyncio.sleep(0)  # queued, not yet taken
    await batcher.close()

    assert queued.done() and queued.result().intent is Intent.HELP
    late = await batcher.submit(text(contacts[2], "HELP", "SMq2"))
    assert late.intent is Intent.HELP and inbound(system, "SMq2") == 1


async def test_agents_actions_share_the_group_commit_of_the_webhooks(
        system: System, org: int, contacts: list[str], batcher: InboundBatcher) -> None:
    """One transaction design: an agent's action from the API is a command like a webhook's, in
    the same batch, with the same savepoint isolation (its refusal is its own)."""
    from optflow.domain.model import Actor, ActorKind, TransitionRefused

    with system.bus.uow() as uow:
        ids = {number: uow.contacts.find_by_address(org, number) for number in contacts[1:4]}
    agent = Actor(ActorKind.AGENT, "7", "agent")
    commands: list[c.Command] = [
        text(contacts[1], "STOP", "SMmix1"),
        c.OptOut(org, ids[contacts[2]], Channel.TEXT, agent, evidence="asked on the phone"),
        c.ResetConsent(org, ids[contacts[3]], Channel.TEXT, agent, evidence="reassigned"),  # agents may not
        text(contacts[3], "YES", "SMmix2"),
    ]
    commits: list[int] = []
    stop = watch_commits(system, lambda: commits.append(1))
    try:
        results = list(await asyncio.gather(*(batcher.submit(cmd) for cmd in commands), return_exceptions=True))
    finally:
        stop()
    assert len(commits) == 1 and batcher.batches == 1
    assert isinstance(results[2], TransitionRefused) and results[2].code == "forbidden"
    assert [consent_state(system, org, number) for number in contacts[1:4]] == [
        State.OPTED_OUT, State.OPTED_OUT, State.OPTED_IN]
