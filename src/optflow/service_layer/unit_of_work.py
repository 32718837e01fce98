"""The unit of work: one database transaction and the repositories that work inside it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from ..adapters import db
from ..adapters.console_auth import ConsoleSessionRepository, SignInFailureRepository
from ..adapters.enrollments import EnrollmentRepository
from ..adapters.inbox import InboxRepository
from ..adapters.overviews import OverviewRepository
from ..adapters.prepared import Savepoint
from ..adapters.report_series import ReportSeriesRepository
from ..adapters.repository import (
    AgentRepository,
    ConsentRepository,
    ContactRepository,
    LedgerQueue,
    LedgerRepository,
    MessageRepository,
    OrgMemo,
    OrgRepository,
)
from ..adapters.webhook_deliveries import WebhookDeliveryRepository


class UnitOfWork:
    """`with uow:` opens a transaction; `commit()` makes it durable; leaving without commit
    rolls everything back.

    Built on an engine it owns its connection. Built on an existing connection (`nested=True`)
    it runs inside a SAVEPOINT of a larger transaction: that is how the group-commit batcher
    runs many inbound messages in one durable commit while keeping each message's failure to
    itself.

    `read_only=True` is for lookups that write nothing: on SQLite such a unit of work reads a
    snapshot without taking the write lock, so it neither waits for writers nor holds them up.
    Units of work nested in one transaction may share an `org_memo` (orgs read once) and should
    share a `ledger_queue`, which the transaction's owner flushes (`LedgerRepository.flush`)
    before it commits.
    """

    def __init__(self, engine: Engine | None = None, *, connection: Connection | None = None,
                 read_only: bool = False, org_memo: OrgMemo | None = None,
                 ledger_queue: LedgerQueue | None = None) -> None:
        if (engine is None) == (connection is None):
            raise ValueError("give an engine or a connection")
        self.engine = engine
        self.read_only = read_only
        self._org_memo = org_memo
        self._outer_ledger_queue = ledger_queue
        self._outer = connection
        self.conn: Connection
        self._tx: Any = None
        self.events: list[object] = []
        self.skip_locked = False
        # Set by a handler whose refusal must still be stored (a wrong PIN counts as an attempt).
        self.commit_on_error = False

    def __enter__(self) -> UnitOfWork:
        if self._outer is not None:
            self.conn = self._outer
            self._tx = Savepoint(self.conn).begin()
        else:
            assert self.engine is not None
            self.conn = self.engine.connect()
            if self.read_only:
                self.conn.execution_options(**{db.READ_ONLY: True})
            try:
                self._tx = self.conn.begin()
            except BaseException:  # e.g. the database stayed locked past its busy timeout
                self.conn.close()
                raise
        self.skip_locked = self.conn.dialect.name == "postgresql"
        self.orgs = OrgRepository(self.conn, self._org_memo)
        self.agents = AgentRepository(self.conn)
        self.contacts = ContactRepository(self.conn)
        self.consents = ConsentRepository(self.conn)
        self.ledger = LedgerRepository(self.conn)  # its own queue: dropped with a rollback
        self.messages = MessageRepository(self.conn)
        self.enrollments = EnrollmentRepository(self.conn)
        self.webhook_deliveries = WebhookDeliveryRepository(self.conn)
        self.inbox = InboxRepository(self.conn)
        self.report_series = ReportSeriesRepository(self.conn)
        self.overviews = OverviewRepository(self.conn)
        self.console_sessions = ConsoleSessionRepository(self.conn)
        self.sign_in_failures = SignInFailureRepository(self.conn)
        self.events = []
        self.commit_on_error = False
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if self._tx is not None and self._tx.is_active:
                self._tx.rollback()
        finally:
            if self._outer is None:
                self.conn.close()

    def commit(self) -> None:
        """Make the work durable. Ledger entries are written now (see `LedgerQueue`), or, in a
        unit of work given the `ledger_queue` of the transaction around it, handed to that queue
        and written when that transaction commits.

        Events raised in it must have been published first (`Services.publish`): an event
        nobody handled would be a flow that never learnt of an opt-out."""
        if self.events:
            raise RuntimeError(f"{len(self.events)} domain event(s) were raised and not published: "
                               + ", ".join(type(e).__name__ for e in self.events))
        if self._outer_ledger_queue is None:
            self.ledger.flush()
            self._tx.commit()
            return
        self._tx.commit()
        self._outer_ledger_queue.entries.extend(self.ledger.queue.entries)
        self.ledger.queue.entries.clear()

    @staticmethod
    def is_conflict(error: BaseException) -> bool:
        """Whether `error` may be a concurrent writer getting there first (a unique row it
        created, a lock it held), so that running the work again on fresh reads may succeed."""
        return isinstance(error, (IntegrityError, OperationalError))

    def rollback(self) -> None:
        self._tx.rollback()

    @contextlib.contextmanager
    def savepoint(self) -> Iterator[None]:
        """`with uow.savepoint():` undoes only the block's work, ledger entries included, when
        it raises."""
        queued = len(self.ledger.queue.entries)
        try:
            with Savepoint(self.conn):
                yield
        except BaseException:
            del self.ledger.queue.entries[queued:]
            raise
