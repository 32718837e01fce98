"""The unit of work, as the service layer knows it: one transaction and the repositories that work
inside it, behind ports the service layer owns. `adapters/unit_of_work.py` fulfils them on
SQLAlchemy; the bootstrap hands the service layer a `UnitOfWorkFactory`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Protocol

from ..domain.model import Channel
from ..domain.records import Contact, Enrollment, SendWindow
from .ports import LedgerFiles
from .repositories import (
    AgentRepository,
    ConsentRepository,
    ConsoleSessionRepository,
    ContactRepository,
    EnrollmentRepository,
    EventEndpointRepository,
    ImportJobRepository,
    InboxRepository,
    LedgerRepository,
    MessageRepository,
    OrgRepository,
    OverviewRepository,
    ReportQueries,
    ReportSeriesRepository,
    SignInFailureRepository,
    SuppressionRepository,
    WebhookDeliveryRepository,
)


class UnitOfWork(Protocol):
    """`with uow:` opens a transaction; `commit()` makes it durable; leaving without commit
    rolls everything back. Events raised in it (`events`) must be published before it commits."""

    events: list[object]
    skip_locked: bool  # claims may skip rows other workers hold (PostgreSQL)
    commit_on_error: bool  # set by a handler whose refusal must still be stored (a wrong PIN counts)

    @property
    def orgs(self) -> OrgRepository: ...
    @property
    def agents(self) -> AgentRepository: ...
    @property
    def contacts(self) -> ContactRepository: ...
    @property
    def consents(self) -> ConsentRepository: ...
    @property
    def ledger(self) -> LedgerRepository: ...
    @property
    def messages(self) -> MessageRepository: ...
    @property
    def enrollments(self) -> EnrollmentRepository: ...
    @property
    def webhook_deliveries(self) -> WebhookDeliveryRepository: ...
    @property
    def event_endpoints(self) -> EventEndpointRepository: ...
    @property
    def reports(self) -> ReportQueries: ...
    @property
    def inbox(self) -> InboxRepository: ...
    @property
    def report_series(self) -> ReportSeriesRepository: ...
    @property
    def overviews(self) -> OverviewRepository: ...
    @property
    def console_sessions(self) -> ConsoleSessionRepository: ...
    @property
    def sign_in_failures(self) -> SignInFailureRepository: ...
    @property
    def suppressions(self) -> SuppressionRepository: ...
    @property
    def import_jobs(self) -> ImportJobRepository: ...

    def __enter__(self) -> UnitOfWork: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def savepoint(self) -> AbstractContextManager[None]:
        """`with uow.savepoint():` undoes only the block's work, ledger entries included, when it raises."""

    def read_ahead(self, senders: Sequence[tuple[int, str, Channel]]) -> None:
        """Read at once what handling a message from each sender (org id, address in normal
        form, channel) will read: a batch's contacts, consents and enrolments in a few
        statements instead of several per message. What this unit of work then changes, or a
        rolled-back savepoint, is read again."""

    def batched(self, enrollments: Sequence[Enrollment], send_windows: Mapping[int, SendWindow]) -> BatchUnitOfWork:
        """A unit of work inside this one for running many enrolments' steps at once: its reads
        come from one preload of their rows, its writes are kept until `flush_writes`."""


class BatchUnitOfWork(UnitOfWork, Protocol):
    def contact(self, contact_id: int) -> Contact | None:
        """The enrolled contact from the preload (None: gone)."""

    def mark(self) -> tuple[int, int, int]: ...

    def undo(self, mark: tuple[int, int, int], enrollment_id: int) -> None:
        """Forget what one enrolment wrote since `mark` (its step failed)."""

    def flush_writes(self) -> None: ...

    def drop_writes(self) -> None:
        """Forget every kept write (their bulk write failed; each enrolment runs again alone)."""


class UnitOfWorkFactory(Protocol):
    """Makes the units of work: the service layer's one way to the database."""

    def __call__(self, *, read_only: bool = False) -> UnitOfWork:
        """A new unit of work. `read_only` ones write nothing and (on SQLite) take no write lock."""

    def sharing_orgs(self) -> UnitOfWorkFactory:
        """A factory whose units of work share one memo of org rows and settings (one claimed
        batch's): read once, not once per unit of work."""

    def is_conflict(self, error: BaseException) -> bool:
        """Whether `error` may be a concurrent writer getting there first, so that running the
        work again on fresh reads may succeed."""

    def ledger_files(self) -> LedgerFiles | None:
        """The ledger's keys and checkpoint file (None for a database that was not bootstrapped)."""
