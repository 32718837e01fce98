"""Shared fixtures: real databases (SQLite always, PostgreSQL when one is configured), a fixed
clock, a recording sender, and a bootstrapped system on top of them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import Engine, text

from optflow.adapters import db
from optflow.adapters.senders import OutboundMessage, RecipientUnsubscribed, Sender, SendResult, TransientSendError
from optflow.bootstrap import System, bootstrap
from optflow.config import Config
from optflow.domain.commands import ReceiveInbound
from optflow.domain.model import Channel
from optflow.entrypoints.cli import main
from optflow.entrypoints.inbound_batcher import InboundBatcher
from optflow.service_layer import admin
from optflow.service_layer.handlers import InboundResult

REPO = Path(__file__).resolve().parents[1]


def run_cli(tmp_path: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`optflow ARGS` as a user runs it: a real process on `tmp_path/cli.db`, the repository's flows."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "OPTFLOW_FLOWS_DIR": str(REPO / "flows")}
    return subprocess.run([sys.executable, "-m", "optflow", *args], input=stdin, capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)
POSTGRES_URL = os.environ.get("OPTFLOW_TEST_POSTGRES_URL")
TEST_PIN_KEY = "test-pin-key-" + "0123456789abcdef" * 2


def postgres_url_or_skip() -> str:
    """The PostgreSQL URL for this test process: each pytest-xdist worker gets its own database."""
    if POSTGRES_URL:
        return _database_per_worker(POSTGRES_URL)
    if os.environ.get("CI"):
        pytest.fail("CI must run the PostgreSQL tests: OPTFLOW_TEST_POSTGRES_URL is not set")
    pytest.skip("no PostgreSQL configured (set OPTFLOW_TEST_POSTGRES_URL)")


_created: dict[str, str] = {}


def _database_per_worker(base_url: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if not worker:
        return base_url
    if worker not in _created:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        url = make_url(base_url)
        name = f"{url.database}_{worker}"
        admin_engine = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin_engine.connect() as conn:
            if not conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar():
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin_engine.dispose()
        _created[worker] = url.set(database=name).render_as_string(hide_password=False)
    return _created[worker]


def _truncate(engine: Engine) -> None:
    from optflow.adapters import orm

    with engine.begin() as conn:
        names = ", ".join(t.name for t in orm.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """The same tests on both databases. SQLite is a real file in WAL mode."""
    if request.param == "sqlite":
        eng = db.make_engine(f"sqlite:///{tmp_path / 'test.db'}")
        db.create_schema(eng)
    else:
        eng = db.make_engine(postgres_url_or_skip())
        db.create_schema(eng)
        _truncate(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> Iterator[Engine]:
    eng = db.make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    db.create_schema(eng)
    yield eng
    eng.dispose()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class RecordingSender(Sender):
    """A fake of the `Sender` port: keeps what it was asked to send; can be told to fail."""

    channels = frozenset(Channel)

    def __init__(self) -> None:
        self.sent: list[OutboundMessage] = []
        self.unsubscribed: set[str] = set()
        self.transient_failures = 0

    def send(self, message: OutboundMessage) -> SendResult:
        if self.transient_failures:
            self.transient_failures -= 1
            raise TransientSendError("provider busy")
        if message.to in self.unsubscribed:
            raise RecipientUnsubscribed("Attempt to send to unsubscribed recipient", code="21610")
        self.sent.append(message)
        return SendResult(provider_id=f"fake-{message.id}")

    def to(self, address: str) -> list[OutboundMessage]:
        return [m for m in self.sent if m.to == address]


# Monday 23 November 2026, 18:00 UTC = 10:00 in San Francisco, 13:00 in New York: inside every
# quiet-hours window of the continental US.
START = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
ORG_NUMBER = "+12025550123"


@pytest.fixture
def clock() -> Clock:
    return Clock(START)


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


_ledger_data_dir: list[Path] = []


@pytest.fixture(autouse=True, scope="session")
def ledger_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where systems on PostgreSQL keep their ledger key and checkpoint files in tests (on a
    SQLite file they sit beside the database), instead of the user's ~/.local/share/optflow."""
    path = tmp_path_factory.mktemp("ledger")
    _ledger_data_dir[:] = [path]
    return path


def make_system(engine: Engine, clock: Clock, sender: RecordingSender, flows_dir: Path | None = None,
                data_dir: Path | None = None) -> System:
    if data_dir is None and engine.dialect.name != "sqlite":
        data_dir = _ledger_data_dir[0]
    return bootstrap(Config(database_url=str(engine.url), flows_dir=flows_dir or REPO / "flows",
                            secret="test-secret", data_dir=data_dir, pin_key=TEST_PIN_KEY),
                     clock=clock, sender=sender, pin_digits=lambda: "123456", engine=engine)


@pytest.fixture
def system(sqlite_engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    return make_system(sqlite_engine, clock, sender)


def new_org(system: System, name: str = "Acme", number: str = ORG_NUMBER, **settings: object) -> int:
    with system.bus.uow() as uow:
        org_id = admin.create_org(uow, name, system.clock(), numbers=(number,) if number else (),
                                  settings={"program_name": f"{name} alerts", **settings})
        uow.commit()
    return org_id


async def texts_through_a_worker(system: System, *texts: tuple[str, str],
                                 phone: str = "+14155552671") -> list[InboundResult]:
    """Each (body, MessageSid) texted by `phone` to the org's number, one after another, through
    a web worker's group commit (`InboundBatcher`, started and stopped here): their results."""
    batcher = InboundBatcher(system)
    batcher.start()
    try:
        return [await batcher.submit(ReceiveInbound(Channel.TEXT, phone, ORG_NUMBER, body, sid))
                for body, sid in texts]
    finally:
        await batcher.close()


def another_writer_can_write(database: str) -> bool:
    """Whether a write transaction could start now on the SQLite file `database` (no waiting):
    False while another connection has one open ("database is locked")."""
    probe = sqlite3.connect(database, timeout=0, isolation_level=None)
    try:
        probe.execute("BEGIN IMMEDIATE")
        probe.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        probe.close()


def new_agent(system: System, org_id: int, role: str = "agent", name: str = "Alice") -> admin.NewAgent:
    with system.bus.uow() as uow:
        agent = admin.add_agent(uow, org_id, name, role, system.clock())
        uow.commit()
    return agent


Cli = Callable[..., Result]


@pytest.fixture
def cli_on(tmp_path: Path) -> Callable[[Path], Cli]:
    """`cli_on(flows_dir)("contacts", "add", ...)` runs `optflow ARGS` in-process (click's runner) on
    `tmp_path/cli.db` with the flows of `flows_dir`; exceptions are not caught, so a crash fails the
    test with its traceback."""

    def with_flows(flows_dir: Path) -> Cli:
        runner = CliRunner()
        # Agent 1 is the admin `optflow init` creates: the CLI acts as a named agent.
        env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "OPTFLOW_FLOWS_DIR": str(flows_dir),
               "OPTFLOW_AGENT": "1"}

        def invoke(*args: str) -> Result:
            return runner.invoke(main, list(args), env=env, catch_exceptions=False)

        return invoke

    return with_flows
