"""SQLite write transactions queue on optflow's writer lock, across processes, and are handed
over the moment the previous writer ends; read-only units of work never wait for a writer."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select

from conftest import ORG_NUMBER, START, Clock, RecordingSender, make_system, new_org
from optflow.adapters import db, orm
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.domain import commands as c
from optflow.domain.model import Channel, Intent
from optflow.entrypoints.inbound_batcher import LOCK_SPIN_S, LOCK_WAITER_THREAD, InboundBatcher

HANG_GUARD_S = 60  # not a property under test: only how long a hung lock may hold the suite

HOLDER = """
import sys
from datetime import UTC, datetime
from optflow.adapters import db
from optflow.adapters.unit_of_work import SqlUnitOfWork
engine = db.make_engine(sys.argv[1])
with SqlUnitOfWork(engine) as uow:
    uow.orgs.create("held", datetime.now(UTC))
    print("locked", flush=True)
    sys.stdin.readline()
    uow.commit()
print("committed", flush=True)
"""


@pytest.fixture
def database(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    url = f"sqlite:///{tmp_path / 'lock.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    yield url, engine
    engine.dispose()


class OtherProcessWriter:
    """Another process in the middle of a write transaction, until `commit()`."""

    def __init__(self, url: str) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", HOLDER, url], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "locked"

    def commit(self) -> float:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        assert self.process.stdout.readline().strip() == "committed"
        committed = time.perf_counter()
        self.process.wait(timeout=10)
        return committed


def started_worker(engine: Engine, monotonic: Callable[[], float] = time.perf_counter) -> InboundBatcher:
    """A web worker's group commit, running on the test's event loop, for an org of its own."""
    system = make_system(engine, Clock(START), RecordingSender())
    new_org(system)
    batcher = InboundBatcher(system, monotonic=monotonic)
    batcher.start()
    return batcher


def stop_submitted(batcher: InboundBatcher, sid: str) -> asyncio.Future[Any]:
    """A customer's STOP handed to the worker as its webhook hands it; the future is the answer."""
    return asyncio.ensure_future(batcher.submit(
        c.ReceiveInbound(Channel.TEXT, "+14155550100", ORG_NUMBER, "STOP", provider_id=sid)))


def orgs(engine: Engine) -> int:
    with SqlUnitOfWork(engine, read_only=True) as uow:
        return int(uow.conn.execute(select(func.count()).select_from(orm.orgs)).scalar_one())


def write_in_thread(engine: Engine, started: list[tuple[float, int]]) -> threading.Thread:
    """A write transaction in a thread; `started` gets when it began and how many orgs the other
    process had committed by then."""

    def write() -> None:
        with SqlUnitOfWork(engine) as uow:
            held = uow.conn.execute(select(func.count()).select_from(orm.orgs).where(orm.orgs.c.name == "held"))
            started.append((time.perf_counter(), int(held.scalar_one())))
            uow.orgs.create("waiting", datetime.now(UTC))
            uow.commit()

    thread = threading.Thread(target=write)
    thread.start()
    return thread


def test_a_writer_waits_for_another_process_and_starts_as_soon_as_it_commits(database: tuple[str, Engine]) -> None:
    """The waiting writer is woken by the lock's hand-over, not by SQLite's busy handler polling
    the file: its connections have no busy timeout at all, so a BEGIN IMMEDIATE that met the other
    process's transaction would fail at once with "database is locked"."""
    url, _ = database
    engine = db.make_engine(url)
    event.listen(engine, "connect", lambda dbapi_connection, _: dbapi_connection.execute("PRAGMA busy_timeout=0"))
    try:
        for held in range(1, 4):
            holder = OtherProcessWriter(url)
            started: list[tuple[float, int]] = []
            thread = write_in_thread(engine, started)
            time.sleep(0.25)
            assert started == []  # still waiting for the other process
            holder.commit()
            thread.join(timeout=HANG_GUARD_S)
            assert len(started) == 1, "the waiting writer began once the other process committed"
            _, seen = started[0]
            assert seen == held, "the waiting writer began after the other process committed, and saw its write"
        assert orgs(engine) == 6
    finally:
        engine.dispose()


def test_a_read_only_unit_of_work_does_not_wait_for_a_writer(database: tuple[str, Engine]) -> None:
    url, engine = database
    holder = OtherProcessWriter(url)
    seen: list[int] = []
    try:
        reader = threading.Thread(target=lambda: seen.append(orgs(engine)))
        reader.start()
        reader.join(timeout=HANG_GUARD_S)  # the writer commits only after this: a waiting reader never ends
        assert seen == [0], "read the last committed state while the writer held its lock"
    finally:
        holder.commit()
        reader.join(timeout=10)
    assert orgs(engine) == 1


def test_a_failed_commit_does_not_keep_the_write_lock(database: tuple[str, Engine]) -> None:
    _, engine = database

    def refuse(conn: object) -> None:
        raise OSError("disk full")

    event.listen(engine, "commit", refuse)
    with pytest.raises(OSError), SqlUnitOfWork(engine) as uow:
        uow.orgs.create("lost", datetime.now(UTC))
        uow.commit()
    event.remove(engine, "commit", refuse)

    started: list[tuple[float, int]] = []
    write_in_thread(engine, started).join(timeout=HANG_GUARD_S)
    assert len(started) == 1, "the next writer got the lock"
    assert orgs(engine) == 1


def test_a_reservation_is_taken_only_when_the_lock_is_free_and_goes_to_the_next_transaction(
        database: tuple[str, Engine]) -> None:
    url, engine = database
    lock = db.writer_lock(engine)
    assert lock is not None
    holder = OtherProcessWriter(url)
    assert not lock.try_reserve(), "another process is writing"
    holder.commit()
    assert lock.try_reserve()
    started: list[tuple[float, int]] = []
    other_thread = write_in_thread(engine, started)
    other_thread.join(timeout=0.3)
    assert started == [], "another thread waits while this thread holds the reservation"
    with SqlUnitOfWork(engine) as uow:  # takes the reservation over without waiting
        uow.orgs.create("reserved", datetime.now(UTC))
        uow.commit()
    other_thread.join(timeout=10)
    assert len(started) == 1
    lock.cancel_reservation()  # nothing left to give back: no effect
    assert lock.try_reserve()
    lock.cancel_reservation()
    OtherProcessWriter(url).commit()  # the lock was given back: another process writes
    assert orgs(engine) == 4


@contextlib.asynccontextmanager
async def another_process_writing(url: str, batcher: InboundBatcher) -> AsyncIterator[OtherProcessWriter]:
    """Another process in the middle of a write transaction until the test commits it; then the
    worker stops. The timer is only a hang guard: the test commits long before it fires."""
    holder = OtherProcessWriter(url)
    release = threading.Timer(HANG_GUARD_S, holder.commit)
    release.start()
    try:
        yield holder
    finally:
        release.cancel()
        if holder.process.poll() is None:
            holder.commit()
        await batcher.close()


async def answered_once_committed(holder: OtherProcessWriter, pending: asyncio.Future[Any]) -> None:
    assert not pending.done(), "nothing is answered before it is committed"
    holder.commit()
    result = await asyncio.wait_for(pending, timeout=HANG_GUARD_S)
    assert result.intent is Intent.OPT_OUT


async def test_a_web_worker_keeps_serving_while_it_waits_for_its_turn_to_write(
        database: tuple[str, Engine]) -> None:
    url, engine = database
    batcher = started_worker(engine)
    async with another_process_writing(url, batcher) as holder:
        pending = stop_submitted(batcher, "SMwaiting")
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert holder.process.poll() is None, "the event loop ran only once the other process had committed"
        await answered_once_committed(holder, pending)


class StoppedClock:
    """The worker's monotonic clock, moved only by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lock_waiters(not_among: set[threading.Thread]) -> list[threading.Thread]:
    return [thread for thread in threading.enumerate()
            if thread.name.startswith(LOCK_WAITER_THREAD) and thread not in not_among]


async def test_a_worker_tries_for_the_lock_itself_for_a_while_then_a_helper_thread_waits_for_it(
        database: tuple[str, Engine]) -> None:
    """Another worker's group commit passes the lock on within milliseconds: the event loop keeps
    trying for it between requests and takes it at once. A longer write (an import) must not keep
    the worker spinning: after `LOCK_SPIN_S` a helper thread waits until the lock is free."""
    url, engine = database
    clock = StoppedClock()
    batcher = started_worker(engine, monotonic=clock)
    earlier = set(threading.enumerate())
    async with another_process_writing(url, batcher) as holder:
        pending = stop_submitted(batcher, "SMspinning")
        for _ in range(20):
            await asyncio.sleep(0.01)
        assert not lock_waiters(earlier), "within LOCK_SPIN_S the event loop itself tries for the lock"
        clock.now += LOCK_SPIN_S * 1.5
        for _ in range(int(HANG_GUARD_S / 0.01)):
            if lock_waiters(earlier):
                break
            await asyncio.sleep(0.01)
        assert lock_waiters(earlier), "after LOCK_SPIN_S a helper thread waits for the lock"
        await answered_once_committed(holder, pending)


def test_waiting_until_the_lock_is_free_does_not_take_it(database: tuple[str, Engine]) -> None:
    """What a web worker's helper thread does while its event loop serves requests: it wakes
    when the other writer commits, and leaves the lock free for the loop (or anyone) to take."""
    url, engine = database
    lock = db.writer_lock(engine)
    assert lock is not None
    holder = OtherProcessWriter(url)
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(lock.wait_until_free()))
    waiter.start()
    waiter.join(timeout=0.3)
    assert woke == [], "it waits while another process writes"
    holder.commit()
    waiter.join(timeout=HANG_GUARD_S)
    assert woke == [True]
    OtherProcessWriter(url).commit()  # not kept: another process writes at once
    assert lock.try_reserve()
    lock.cancel_reservation()


async def test_a_worker_stopping_while_it_waits_for_the_lock_leaves_it_free(database: tuple[str, Engine]) -> None:
    url, engine = database
    batcher = started_worker(engine)
    holder = OtherProcessWriter(url)
    release = threading.Timer(0.2, holder.commit)  # the other process commits while the worker stops
    release.start()
    try:
        pending = stop_submitted(batcher, "SMstopping")
        for _ in range(5):
            await asyncio.sleep(0.01)
        await batcher.close()  # handles what is queued, then stops waiting
        result = await asyncio.wait_for(pending, timeout=HANG_GUARD_S)
        assert result.intent is Intent.OPT_OUT
    finally:
        release.join(timeout=HANG_GUARD_S)
    OtherProcessWriter(url).commit()  # nothing of the stopped worker's holds the lock
    assert orgs(engine) == 3
