"""A STOP and a dispatcher's hand-over of the same claimed message, at the same moment, on
PostgreSQL (READ COMMITTED; on SQLite the two transactions take turns on the writer lock).

Whichever transaction writes the row first wins, and the other sees its result: a hand-over
that got there first is not turned into a cancellation, and a cancellation that got there first
is not handed over. Each test holds one transaction open, lets the other run into its row lock
in a thread (the test waits until PostgreSQL shows it waiting), then commits.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, select, text

from conftest import ORG_NUMBER, START, Clock, RecordingSender, make_system, new_agent, new_org, postgres_url_or_skip
from optflow.adapters import db, orm
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel

PHONE = "+14155552671"
TOKEN = "claim-under-test"


@pytest.fixture
def system() -> Iterator[System]:
    engine = db.make_engine(postgres_url_or_skip())
    db.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(t.name for t in orm.metadata.sorted_tables)} RESTART IDENTITY CASCADE"))
    built = make_system(engine, Clock(START), RecordingSender())
    yield built
    engine.dispose()


def claimed_message(system: System) -> tuple[int, int]:
    """One message queued to an opted-in contact and claimed under TOKEN: (org id, message id)."""
    org = new_org(system)
    agent = Actor(ActorKind.AGENT, str(new_agent(system, org).id))
    contact = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    system.bus.handle(c.RecordOptIn(org, contact, Channel.TEXT, agent, method="web_form"))
    message_id = system.bus.handle(c.SendMessage(org, contact, Channel.TEXT, "Your car is ready", agent)).message_id
    with SqlUnitOfWork(system.engine) as uow:
        [row] = uow.messages.claim_due(START, 10, uow.skip_locked, TOKEN, START + timedelta(minutes=10))
        uow.commit()
    assert row.id == message_id
    return org, message_id


def run_until_it_waits_for_a_lock(engine: Engine, work: Callable[[], object]) -> tuple[threading.Thread, list[object]]:
    """Start `work` in a thread and return once PostgreSQL shows a session waiting for a lock (or
    the work ended without waiting)."""
    results: list[object] = []
    thread = threading.Thread(target=lambda: results.append(work()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    with engine.connect() as conn:
        while thread.is_alive() and time.monotonic() < deadline:
            waiting = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'")).scalar()
            conn.rollback()
            if waiting:
                break
            time.sleep(0.01)
    return thread, results


def status(system: System, message_id: int) -> str:
    with system.engine.connect() as conn:
        return str(conn.execute(select(orm.messages.c.status).where(orm.messages.c.id == message_id)).scalar())


@pytest.mark.postgres
def test_a_stop_waiting_behind_a_hand_over_does_not_cancel_the_handed_over_message(system: System) -> None:
    _, message_id = claimed_message(system)
    with SqlUnitOfWork(system.engine) as hand_over:
        assert hand_over.messages.hand_over(message_id, TOKEN, START, START + timedelta(minutes=10))
        stop, _ = run_until_it_waits_for_a_lock(system.engine, lambda: system.bus.handle(
            c.ReceiveInbound(Channel.TEXT, PHONE, ORG_NUMBER, "STOP", "SM1")))
        hand_over.commit()
    stop.join(60)
    assert not stop.is_alive()
    assert status(system, message_id) == "handed_over"


@pytest.mark.postgres
def test_a_hand_over_waiting_behind_a_stop_finds_the_message_cancelled(system: System) -> None:
    org, message_id = claimed_message(system)
    with SqlUnitOfWork(system.engine) as stop:  # what an opt-out does to the outbox (handlers._stop_everything_queued)
        assert stop.messages.queued_for(org, PHONE, (Channel.TEXT,)) == [message_id]
        stop.messages.set(message_id, status="cancelled", last_error="recipient opted out")

        def hand_over() -> bool:
            with SqlUnitOfWork(system.engine) as uow:
                taken = uow.messages.hand_over(message_id, TOKEN, START, START + timedelta(minutes=10))
                uow.commit()
            return taken

        thread, results = run_until_it_waits_for_a_lock(system.engine, hand_over)
        stop.commit()
    thread.join(60)
    assert results == [False]
    assert status(system, message_id) == "cancelled"
