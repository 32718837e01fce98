"""The unit of work on SQLAlchemy Core: one database transaction and the repositories that work
inside it. The service layer knows it only as its `UnitOfWork` port (service_layer/unit_of_work.py)
and gets new ones from a `SqlUnitOfWorkFactory`, which the bootstrap builds on the engine."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError

from ..domain.model import Channel
from ..domain.records import Contact, Enrollment, SendWindow
from . import db, ledger_files
from .console_auth import ConsoleSessionRepository, SignInFailureRepository
from .enrollments import EnrollmentRepository
from .event_outbox import EventEndpointRepository
from .flow_batch import (
    BatchReads,
    BatchWrites,
    BufferedEnrollments,
    BufferedMessages,
    PreloadedConsents,
    PreloadedContacts,
    PreloadedSuppressions,
)
from .imports import ImportJobRepository, SuppressionRepository
from .inbox import InboxRepository
from .overviews import OverviewRepository
from .prepared import Savepoint, forget_savepoints
from .report_series import ReportSeriesRepository
from .reports import ReportQueries
from .repository import (
    AgentRepository,
    ConsentRepository,
    ContactRepository,
    LedgerQueue,
    LedgerRepository,
    MessageRepository,
    OrgMemo,
    OrgRepository,
)
from .webhook_deliveries import WebhookDeliveryRepository


class SqlUnitOfWork:
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

    def __enter__(self) -> SqlUnitOfWork:
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
            forget_savepoints(self.conn)
        self.skip_locked = self.conn.dialect.name == "postgresql"
        self.orgs = OrgRepository(self.conn, self._org_memo)
        self.agents = AgentRepository(self.conn)
        self.contacts = ContactRepository(self.conn)
        self.consents = ConsentRepository(self.conn)
        self.ledger = LedgerRepository(self.conn)  # its own queue: dropped with a rollback
        self.messages = MessageRepository(self.conn)
        self.enrollments = EnrollmentRepository(self.conn)
        self.webhook_deliveries = WebhookDeliveryRepository(self.conn)
        self.reports = ReportQueries(self.conn)
        self.inbox = InboxRepository(self.conn)
        self.report_series = ReportSeriesRepository(self.conn)
        self.overviews = OverviewRepository(self.conn)
        self.console_sessions = ConsoleSessionRepository(self.conn)
        self.sign_in_failures = SignInFailureRepository(self.conn)
        self.event_endpoints = EventEndpointRepository(self.conn)
        self.suppressions = SuppressionRepository(self.conn)
        self.import_jobs = ImportJobRepository(self.conn)
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

    def batched(self, enrollments: Sequence[Enrollment], send_windows: Mapping[int, SendWindow]) -> BatchUnitOfWork:
        """A unit of work inside this one for running many enrolments' steps at once: reads come
        from one preload of `enrollments`' rows, writes are kept until `flush_writes`."""
        return BatchUnitOfWork(self, BatchReads.load(self.conn, enrollments, send_windows))

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
            self.forget_reads()
            raise

    def forget_reads(self) -> None:
        """What the repositories keep of rows read (or read ahead) may no longer hold after a
        savepoint rolled back: they read again."""
        self.consents.forget_reads()
        self.contacts.forget_reads()
        self.enrollments.forget_reads()

    def read_ahead(self, senders: Sequence[tuple[int, str, Channel]]) -> None:
        """Read, in a few statements, what handling messages from `senders` (org id, address in
        normal form, channel) reads one sender at a time: the contact at each address, its
        consent on that channel, the contacts' running enrolments (see `MessageBus.handle_batch`)."""
        by_org: dict[int, list[tuple[str, Channel]]] = {}
        for org_id, address, channel in senders:
            by_org.setdefault(org_id, []).append((address, channel))
        contact_ids: list[int] = []
        for org_id, wanted in by_org.items():
            contact_ids += self.contacts.read_ahead(org_id, [address for address, _ in wanted])
            self.consents.read_ahead(org_id, wanted)
        self.enrollments.read_ahead(contact_ids)


class BatchUnitOfWork(SqlUnitOfWork):
    """The unit of work of the batched flow steps: the batch's transaction and org memo, with the
    contacts, addresses, consents and recent sends from the batch's preload, and the outbox
    rows, history rows and enrolment changes kept until `flush_writes`.
    Never entered: it lives inside the batch's own unit of work."""

    def __init__(self, uow: SqlUnitOfWork, reads: BatchReads) -> None:
        super().__init__(connection=uow.conn)
        self.conn = uow.conn
        self.skip_locked = uow.skip_locked
        self.orgs, self.agents, self.ledger = uow.orgs, uow.agents, uow.ledger
        self.webhook_deliveries, self.reports, self.import_jobs = uow.webhook_deliveries, uow.reports, uow.import_jobs
        self.event_endpoints, self.inbox = uow.event_endpoints, uow.inbox
        self.report_series, self.overviews = uow.report_series, uow.overviews
        self.console_sessions, self.sign_in_failures = uow.console_sessions, uow.sign_in_failures
        self.contacts = PreloadedContacts(uow.conn, reads)
        self.consents = PreloadedConsents(uow.conn, reads)
        self.suppressions = PreloadedSuppressions(uow.conn, reads)
        self.reads = reads
        self.drop_writes()

    def contact(self, contact_id: int) -> Contact | None:
        """The enrolled contact from the preload (None: gone)."""
        return self.reads.contacts.get(contact_id)

    def mark(self) -> tuple[int, int, int]:
        return self.writes.mark()

    def undo(self, mark: tuple[int, int, int], enrollment_id: int) -> None:
        """Forget what one enrolment wrote since `mark` (its step failed)."""
        self.writes.undo(mark, enrollment_id)

    def flush_writes(self) -> None:
        self.writes.flush(self.conn)

    def drop_writes(self) -> None:
        """Forget every kept write (their bulk write failed; each enrolment runs again alone)."""
        self.writes = BatchWrites()
        self.messages = BufferedMessages(self.conn, self.reads, self.writes)
        self.enrollments = BufferedEnrollments(self.conn, self.reads, self.writes)


class SqlUnitOfWorkFactory:
    """New units of work on one engine: the service layer's `UnitOfWorkFactory` port."""

    def __init__(self, engine: Engine, org_memo: OrgMemo | None = None) -> None:
        self.engine = engine
        self._org_memo = org_memo

    def __call__(self, *, read_only: bool = False) -> SqlUnitOfWork:
        return SqlUnitOfWork(self.engine, read_only=read_only, org_memo=self._org_memo)

    def sharing_orgs(self) -> SqlUnitOfWorkFactory:
        """A factory whose units of work share one memo of org rows (one claimed batch's)."""
        return SqlUnitOfWorkFactory(self.engine, OrgMemo())

    @staticmethod
    def is_conflict(error: BaseException) -> bool:
        return SqlUnitOfWork.is_conflict(error)

    def ledger_files(self) -> ledger_files.LedgerFiles | None:
        return ledger_files.attached(self.engine)
