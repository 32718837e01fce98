"""A batch runs first without a savepoint per command (`MessageBus._run_plainly`); when any of
its commands fails or is refused, nothing of that first run stays, and the batch runs again with
a savepoint per command, so each failure is still its own. On both databases."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select

from conftest import ORG_NUMBER, Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import orm
from optflow.adapters.unit_of_work import SqlUnitOfWork, SqlUnitOfWorkFactory
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, State, TransitionRefused

PHONES = ("+14155552671", "+14155552672", "+14155552673")


class CountingUnitOfWork(SqlUnitOfWork):
    """The real unit of work, counting the savepoints opened in it."""

    def __init__(self, engine: Engine, counts: list[int]) -> None:
        super().__init__(engine)
        self.counts = counts

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        self.counts.append(1)
        with super().savepoint():
            yield


class CountingUnitOfWorkFactory(SqlUnitOfWorkFactory):
    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.savepoints: list[int] = []

    def __call__(self, *, read_only: bool = False) -> SqlUnitOfWork:
        if read_only:
            return super().__call__(read_only=True)
        return CountingUnitOfWork(self.engine, self.savepoints)


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    return make_system(engine, clock, sender)


@pytest.fixture
def counting(system: System) -> CountingUnitOfWorkFactory:
    factory = CountingUnitOfWorkFactory(system.engine)
    system.bus.uows = factory
    return factory


def text(org: int, phone: str, body: str, sid: str) -> c.ReceiveInbound:
    return c.ReceiveInbound(Channel.TEXT, phone, ORG_NUMBER, body, sid, org_id=org)


def opted_in_contact(system: System, org: int, agent: Actor, phone: str) -> int:
    contact: int = system.bus.handle(c.CreateContact(org, name="Sam", phones=(phone,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="paper_form", address=phone))
    return contact


def ledger_moves(system: System, phone: str) -> list[tuple[str, str]]:
    with system.engine.connect() as conn:
        rows = conn.execute(select(orm.ledger.c.from_state, orm.ledger.c.to_state)
                            .where(orm.ledger.c.address == phone).order_by(orm.ledger.c.seq)).all()
    return [(row[0], row[1]) for row in rows]


def stored_inbound(system: System, sid: str) -> int:
    with system.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(orm.messages)
                                .where(orm.messages.c.provider_id == sid)).scalar_one())


def test_a_batch_in_which_nothing_fails_opens_no_savepoint_per_command(
        system: System, counting: CountingUnitOfWorkFactory) -> None:
    org = new_org(system)
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")
    for phone in PHONES:
        opted_in_contact(system, org, agent, phone)
    counting.savepoints.clear()

    handled = system.bus.handle_batch([text(org, PHONES[0], "STOP", "SM1"), text(org, PHONES[1], "HELP", "SM2"),
                                       text(org, PHONES[2], "see you at five", "SM3")])

    assert [done.error for done in handled] == [None, None, None]
    assert [done.result.state for done in handled] == [State.OPTED_OUT, State.OPTED_IN, State.OPTED_IN]
    assert counting.savepoints == []
    assert ledger_moves(system, PHONES[0])[-1] == ("opted_in", "opted_out")


def test_a_refusal_runs_the_batch_again_with_a_savepoint_per_command_and_nothing_twice(
        system: System, counting: CountingUnitOfWorkFactory) -> None:
    org = new_org(system)
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id), "agent")
    contacts = [opted_in_contact(system, org, agent, phone) for phone in PHONES]
    before = [len(ledger_moves(system, phone)) for phone in PHONES]
    counting.savepoints.clear()

    handled = system.bus.handle_batch([
        text(org, PHONES[0], "STOP", "SM1"),
        c.ResetConsent(org, contacts[1], Channel.TEXT, agent, evidence="reassigned"),  # agents may not
        text(org, PHONES[2], "STOP", "SM3"),
    ])

    first, refused, last = handled
    assert first.error is None and first.result.state is State.OPTED_OUT
    assert not first.result.duplicate and first.result.replies  # answered, not taken for a replay
    assert isinstance(refused.error, TransitionRefused) and refused.error.code == "forbidden"
    assert last.error is None and last.result.state is State.OPTED_OUT
    assert len(counting.savepoints) >= len(handled)  # the second run: one per command at least
    # What the first run wrote before the refusal was undone: each opt-out is recorded once.
    assert [len(ledger_moves(system, phone)) - n for phone, n in zip(PHONES, before, strict=True)] == [1, 0, 1]
    assert stored_inbound(system, "SM1") == stored_inbound(system, "SM3") == 1
    with system.bus.uow(read_only=True) as uow:
        assert not uow.ledger.verify(org).problems
