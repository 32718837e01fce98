"""Database engines: SQLite in WAL mode by default, PostgreSQL when DATABASE_URL says so."""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import threading
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool, StaticPool

log = logging.getLogger("optflow.db")

DEFAULT_URL = "sqlite:///optflow.db"
READ_ONLY = "optflow_read_only"  # execution option of a connection whose transactions only read
BUSY_TIMEOUT_S = 30


def database_url(explicit: str | None = None) -> str:
    url = explicit or os.environ.get("DATABASE_URL") or DEFAULT_URL
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def _sqlite_pragmas(wal_autocheckpoint: int) -> Any:
    def set_pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA wal_autocheckpoint={int(wal_autocheckpoint)}")
        cursor.close()

    return set_pragmas


class WalCheckpointer:
    """Copies SQLite's write-ahead log back into the database file from a background thread.

    By default SQLite does it inside a commit, once the log holds 1,000 pages: the web worker
    whose group commit crosses the mark copies and syncs the pages while it holds the write
    lock, and every other writer waits (it was ~60% of the commit time of the inbound pipeline,
    docs/performance.md). A web worker's engine raises that mark to `SAFETY_NET_PAGES` (in case
    this thread falls behind) and this thread checkpoints every `every_s` seconds on its own
    connection in PASSIVE mode, which never waits for or blocks readers and writers."""

    SAFETY_NET_PAGES = 10_000

    def __init__(self, database_path: str, every_s: float = 0.5) -> None:
        self.database_path = database_path
        self.every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def checkpoint(self) -> tuple[int, int]:
        """One PASSIVE checkpoint: (frames in the log, frames now copied into the database)."""
        connection = sqlite3.connect(self.database_path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        try:
            _busy, in_log, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        finally:
            connection.close()
        return int(in_log), int(copied)

    def start(self) -> WalCheckpointer:
        self._thread = threading.Thread(target=self._run, name="optflow-wal-checkpoint", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=BUSY_TIMEOUT_S)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.checkpoint()
            except sqlite3.Error:
                log.exception("checkpointing %s failed; SQLite's own checkpoint takes over at %d pages",
                              self.database_path, self.SAFETY_NET_PAGES)


class WriterLock:
    """Queues the write transactions of every optflow process and thread on one SQLite file, and
    wakes the next writer the moment the previous one commits.

    SQLite alone makes a blocked writer poll: its busy handler sleeps 1, 2, 5, 10 ... up to
    100 ms between tries, so with two web workers committing in turn most of the time went to
    sleeping while the database was free (docs/performance.md). Here a writer waits on a mutex
    (threads of one process) and then on an exclusive `flock` of `<database>-writer`
    (processes), both of which hand over at once; BEGIN IMMEDIATE then finds the database
    free. Other programs writing the file still meet SQLite's own lock and busy timeout.
    """

    def __init__(self, database_path: str) -> None:
        self.path = database_path + "-writer"
        self._mutex = threading.Lock()
        self._fd: int | None = None
        self._holder: int | None = None  # id() of the DBAPI connection whose transaction holds it
        self._reserved_for: int | None = None  # the thread holding it for its next transaction

    def try_reserve(self) -> bool:
        """Take the lock now if it is free, for the next write transaction this thread begins
        (`acquire` then takes it over without waiting); False, at once, if it is not free.
        Lets an event loop wait for its turn while it goes on serving requests, instead of
        blocking in `acquire`. Call `cancel_reservation` if no transaction took it over."""
        if not self._mutex.acquire(blocking=False):
            return False
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._mutex.release()
            return False
        except BaseException:
            self._mutex.release()
            raise
        self._reserved_for = threading.get_ident()
        return True

    def wait_until_free(self) -> bool:
        """Block until no other writer holds the lock (up to the busy timeout; False if it
        timed out), without keeping it: for a helper thread of an event loop, whose loop then
        takes it with `try_reserve` once it is ready to write. (A lock reserved by the helper
        would sit idle while the loop finished what it was doing, and every writer waited.)"""
        if not self._mutex.acquire(timeout=BUSY_TIMEOUT_S):
            return False
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
            fcntl.flock(self._file(), fcntl.LOCK_UN)
        finally:
            self._mutex.release()
        return True

    def cancel_reservation(self) -> None:
        """Give back a reservation of this thread that no transaction took over."""
        if self._reserved_for != threading.get_ident():
            return
        self._reserved_for = None
        fcntl.flock(self._file(), fcntl.LOCK_UN)
        self._mutex.release()

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        return self._fd

    def acquire(self, dbapi_connection: Any) -> None:
        if self._reserved_for == threading.get_ident():
            self._reserved_for = None
            self._holder = id(dbapi_connection)
            return
        if not self._mutex.acquire(timeout=BUSY_TIMEOUT_S):
            raise OperationalError("BEGIN IMMEDIATE", None, OSError(
                f"database is locked: another write transaction of this process held it {BUSY_TIMEOUT_S} s"))
        try:
            fcntl.flock(self._file(), fcntl.LOCK_EX)
        except BaseException:
            self._mutex.release()
            raise
        self._holder = id(dbapi_connection)

    def holds(self, dbapi_connection: Any) -> bool:
        """Whether the transaction of `dbapi_connection` (or of the pool's proxy of it) holds the lock."""
        return self._holder == id(getattr(dbapi_connection, "dbapi_connection", dbapi_connection))

    def release(self, dbapi_connection: Any) -> None:
        """After the transaction of `dbapi_connection` ended; does nothing if it held no lock."""
        if not self.holds(dbapi_connection):
            return
        self._holder = None
        assert self._fd is not None
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._mutex.release()


def _sqlite_begin(conn: Connection) -> None:
    """A read-only unit of work (`READ_ONLY`) starts a deferred transaction: in WAL mode it
    reads a snapshot without blocking or waiting for writers. Any other takes the write lock
    when it starts, so two writers never deadlock on a lock upgrade: they queue instead."""
    if conn.get_execution_options().get(READ_ONLY):
        conn.exec_driver_sql("BEGIN")
        return
    lock = writer_lock(conn.engine)
    if lock is not None:
        lock.acquire(conn.connection.dbapi_connection)
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def sqlite_file(engine: Engine) -> str | None:
    """The database file of a SQLite engine (None for PostgreSQL and in-memory SQLite)."""
    database = engine.url.database
    if not is_sqlite(engine) or not database or database == ":memory:":
        return None
    return os.path.abspath(database)


def writer_lock(engine: Engine) -> WriterLock | None:
    lock: WriterLock | None = engine.dialect.__dict__.get("optflow_writer_lock")
    return lock


def _release_at_checkin(lock: WriterLock) -> Any:
    def checkin(dbapi_connection: Any, _record: Any) -> None:
        """A connection must not go back to the pool holding the write lock. The pool skips its
        own rollback when a commit failed half-way (e.g. in a commit hook), which would leave
        the transaction, and the lock, open."""
        if lock.holds(dbapi_connection):
            try:
                dbapi_connection.rollback()
            finally:
                lock.release(dbapi_connection)

    return checkin


def _release_after(lock: WriterLock, end: Any) -> Any:
    def end_then_release(dbapi_connection: Any) -> None:
        try:
            end(dbapi_connection)
        finally:
            lock.release(dbapi_connection)

    return end_then_release


def make_engine(url: str | None = None, *, pool_size: int = 5, wal_autocheckpoint: int = 1000) -> Engine:
    """`wal_autocheckpoint`: SQLite's own checkpoint mark in pages (its default, 1,000), raised by
    processes that run a `WalCheckpointer`. Errors never show a statement's parameters
    (`hide_parameters`): they hold message text and phone numbers, and errors get logged."""
    url = database_url(url)
    if url.startswith("sqlite"):
        memory = url in ("sqlite://", "sqlite:///:memory:")
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "isolation_level": None},
            poolclass=StaticPool if memory else NullPool if os.environ.get("OPTFLOW_SQLITE_NULLPOOL") else None,
            hide_parameters=True,
        )
        event.listen(engine, "connect", _sqlite_pragmas(wal_autocheckpoint))
        event.listen(engine, "begin", _sqlite_begin)
        if not memory and engine.url.database:
            # Released right after the DBAPI commit or rollback: SQLAlchemy has no event after them.
            lock = WriterLock(os.path.abspath(engine.url.database))
            dialect: Any = engine.dialect
            dialect.optflow_writer_lock = lock
            dialect.do_commit = _release_after(lock, dialect.do_commit)
            dialect.do_rollback = _release_after(lock, dialect.do_rollback)
            event.listen(engine, "checkin", _release_at_checkin(lock))
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True, hide_parameters=True)


def make_web_worker_engine(url: str | None = None) -> tuple[Engine, WalCheckpointer | None]:
    """The engine of a web worker and, on a SQLite file, its started `WalCheckpointer` (stop it
    when the worker stops): its group commits leave checkpoints to that thread."""
    engine = make_engine(url, wal_autocheckpoint=WalCheckpointer.SAFETY_NET_PAGES)
    database_file = sqlite_file(engine)
    return engine, WalCheckpointer(database_file).start() if database_file else None


def create_schema(engine: Engine) -> None:
    """Create optflow's tables on an empty database, at the newest schema revision; check that any
    other database is at that revision (`migrations.SchemaNotCurrent`, naming what to run, if not).
    Upgrading is a separate, deliberate step: `optflow db upgrade` (`migrations.upgrade`)."""
    from . import migrations  # Alembic is loaded by the processes that touch the schema only

    migrations.create_or_check(engine)
