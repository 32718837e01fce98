"""A web worker checkpoints SQLite's write-ahead log from a background thread instead of inside
its group commits."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import text

from optflow.adapters import db
from optflow.adapters.unit_of_work import SqlUnitOfWork


def fill(engine: object, orgs: int) -> None:
    for n in range(orgs):
        with SqlUnitOfWork(engine) as uow:  # type: ignore[arg-type]
            uow.orgs.create(f"org {n}", datetime.now(UTC))
            uow.commit()


def test_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "optflow.db"
    engine = db.make_engine(f"sqlite:///{path}", wal_autocheckpoint=db.WalCheckpointer.SAFETY_NET_PAGES)
    db.create_schema(engine)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == db.WalCheckpointer.SAFETY_NET_PAGES
    assert db.sqlite_file(engine) == str(path)
    checkpointer = db.WalCheckpointer(str(path))
    fill(engine, 600)
    in_log, copied = checkpointer.checkpoint()
    assert in_log > 1000, "no commit checkpointed on its own below the raised mark"
    assert copied == in_log
    engine.dispose()


def test_the_thread_copies_the_log_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "optflow.db"
    engine = db.make_engine(f"sqlite:///{path}", wal_autocheckpoint=db.WalCheckpointer.SAFETY_NET_PAGES)
    db.create_schema(engine)
    fill(engine, 300)
    before = path.stat().st_size  # the new pages are still in the log only
    checkpointer = db.WalCheckpointer(str(path), every_s=0.05).start()
    try:
        deadline = time.monotonic() + 10
        while path.stat().st_size == before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert path.stat().st_size > before, "the thread copied the log's pages into the database file"
        fill(engine, 10)  # writers go on meanwhile
    finally:
        checkpointer.stop()
    with SqlUnitOfWork(engine, read_only=True) as uow:
        assert len(uow.orgs.all()) == 310
    engine.dispose()


def test_engines_keep_sqlites_own_checkpoint_by_default(tmp_path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{tmp_path / 'optflow.db'}")
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA wal_autocheckpoint")).scalar() == 1000
    assert db.sqlite_file(db.make_engine("sqlite://")) is None
    engine.dispose()
