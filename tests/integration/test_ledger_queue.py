"""Ledger entries are queued in a transaction and chained onto the org's head when it commits:
nothing rolled back reaches the ledger, nothing committed is lost, and concurrent transactions
still build one intact chain (SQLite and PostgreSQL)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from optflow.adapters import orm
from optflow.adapters.repository import LedgerQueue, LedgerRepository
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.service_layer import admin
from optflow.service_layer.unit_of_work import UnitOfWork

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)


def change(uow: UnitOfWork, org_id: int, label: str, at: datetime = NOW) -> None:
    uow.ledger.append_change(
        org_id, None, channel="text", address="+14155552671", from_state="unknown", to_state="opted_out",
        trigger="opt_out", method="keyword", actor_kind="customer", actor_id="+14155552671",
        source_message_id=label, evidence=label, occurred_at=at, recorded_at=at)


def new_org(engine: Engine) -> int:
    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "Acme", NOW)
        uow.commit()
    return org_id


def stored(engine: Engine, org_id: int) -> list[str]:
    with SqlUnitOfWork(engine) as uow:
        assert uow.ledger.verify(org_id).problems == []
        return [row["evidence"] for row in uow.ledger.entries(org_id)]


def test_entries_are_written_at_commit_in_order_and_readable_before(engine: Engine) -> None:
    org_id = new_org(engine)
    with SqlUnitOfWork(engine) as uow:
        change(uow, org_id, "first")
        change(uow, org_id, "second")
        assert [row["evidence"] for row in uow.ledger.entries(org_id)] == ["first", "second"]  # flushed to read
        change(uow, org_id, "third")
        uow.commit()
    with SqlUnitOfWork(engine) as uow:
        change(uow, org_id, "never")  # left without commit
    assert stored(engine, org_id) == ["first", "second", "third"]


def test_a_nested_unit_of_work_hands_its_entries_over_only_when_it_commits(engine: Engine) -> None:
    org_id = new_org(engine)
    queue = LedgerQueue()
    with engine.connect() as conn, conn.begin():
        with SqlUnitOfWork(connection=conn, ledger_queue=queue) as kept:
            change(kept, org_id, "kept")
            kept.commit()
        with SqlUnitOfWork(connection=conn, ledger_queue=queue) as dropped:
            change(dropped, org_id, "rolled back")
        with pytest.raises(RuntimeError), SqlUnitOfWork(connection=conn, ledger_queue=queue) as failed:
            change(failed, org_id, "failed")
            raise RuntimeError("boom")
        assert [entry["evidence"] for entry in queue.entries] == ["kept"]
        LedgerRepository(conn, queue).flush()
    assert stored(engine, org_id) == ["kept"]


def test_a_savepoint_that_fails_takes_its_entries_with_it(engine: Engine) -> None:
    org_id = new_org(engine)
    with SqlUnitOfWork(engine) as uow:
        change(uow, org_id, "before")
        with pytest.raises(RuntimeError), uow.savepoint():
            change(uow, org_id, "inside")
            raise RuntimeError("boom")
        with uow.savepoint():
            change(uow, org_id, "after")
        uow.commit()
    assert stored(engine, org_id) == ["before", "after"]


def test_concurrent_transactions_build_one_intact_chain(engine: Engine) -> None:
    org_id = new_org(engine)
    errors: list[BaseException] = []

    def write(worker: int) -> None:
        try:
            for batch in range(10):
                with SqlUnitOfWork(engine) as uow:
                    for n in range(5):
                        change(uow, org_id, f"{worker}-{batch}-{n}", NOW + timedelta(seconds=n))
                    uow.commit()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(worker,)) for worker in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    entries = stored(engine, org_id)
    assert sorted(entries) == sorted(f"{w}-{b}-{n}" for w in range(3) for b in range(10) for n in range(5))
    for worker in range(3):  # each transaction's entries stay together and in order
        mine = [e for e in entries if e.startswith(f"{worker}-")]
        assert mine == [f"{worker}-{b}-{n}" for b in range(10) for n in range(5)]
    with engine.connect() as conn:
        head = conn.execute(select(orm.ledger_heads.c.seq).where(orm.ledger_heads.c.org_id == org_id)).scalar()
        assert head == conn.execute(select(func.count()).select_from(orm.ledger)).scalar() == 150
