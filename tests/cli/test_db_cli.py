"""`optflow db upgrade|current`, and every other command refusing a database whose schema is not
this optflow's: a real process on a real SQLite file, as an operator runs them."""

from __future__ import annotations

import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from conftest import run_cli as optflow
from optflow.adapters import db, migrations, orm


def test_a_fresh_database_made_by_init_is_at_head(tmp_path: Path) -> None:
    assert optflow(tmp_path, "init").returncode == 0
    current = optflow(tmp_path, "db", "current")
    assert current.returncode == 0, current.stderr
    assert f"revision: {migrations.head()} (head)" in current.stdout and "up to date" in current.stdout


def test_upgrade_creates_an_empty_database_and_then_has_nothing_to_do(tmp_path: Path) -> None:
    empty = optflow(tmp_path, "db", "current")
    assert empty.returncode == 1 and "revision: none" in empty.stdout
    assert "no schema yet: `optflow db upgrade` or `optflow init` creates it" in empty.stderr

    created = optflow(tmp_path, "db", "upgrade")
    assert created.returncode == 0 and f"created the schema at revision {migrations.head()} (head)" in created.stdout
    assert optflow(tmp_path, "init").returncode == 0  # the upgraded database is accepted
    again = optflow(tmp_path, "db", "upgrade")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def made_before_migrations(path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{path}")
    orm.metadata.create_all(engine)  # what optflow did before it had migrations
    engine.dispose()


def upgraded_by_a_newer_optflow(path: Path) -> None:
    engine = db.make_engine(f"sqlite:///{path}")
    db.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9002'"))
    engine.dispose()


@pytest.mark.parametrize(("make", "commands", "message"), [
    (made_before_migrations, [("serve", "--port", "{port}"), ("worker",), ("init",)],
     "Error: the database has optflow's tables but no schema revision (optflow created it before it had "
     "migrations): back it up and run `optflow db upgrade`"),
    (upgraded_by_a_newer_optflow, [("serve", "--port", "{port}"), ("contacts", "add", "--phone", "+14155552671")],
     "Error: the database schema is at revision 9002, which this optflow does not know"),
], ids=["before migrations", "ahead"])
def test_commands_refuse_a_database_not_at_head_and_leave_it_alone(
        tmp_path: Path, make: Callable[[Path], None], commands: list[tuple[str, ...]], message: str) -> None:
    make(tmp_path / "cli.db")
    for command in commands:
        run = optflow(tmp_path, *(arg.format(port=free_port()) for arg in command))
        assert run.returncode == 1, (command, run.stdout, run.stderr)
        assert message in run.stderr, (command, run.stderr)
        assert "Traceback" not in run.stderr + run.stdout
        assert "listening" not in run.stdout
    engine = db.make_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orm.orgs)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(orm.contacts)).scalar() == 0
    engine.dispose()
