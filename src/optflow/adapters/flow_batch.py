"""Reads and writes of one batch of due enrolments, set-based.

Why: run one by one, a due drip step costs about a dozen statements (the contact, its addresses,
its consents twice, the consent of the channel, the outbox row, two history rows, the enrolment
read back and moved, a savepoint), and on this machine kind each statement's Python costs more
than the database's work. For a claimed batch, `BatchReads.load` reads the contacts, addresses,
consents and (for orgs with frequency caps) recent sends of every enrolment with a few `IN`
queries, and the repositories below answer the usual per-enrolment reads from it, exactly as the
per-row queries would (same rows, same order). Their writes (outbox rows, history rows, enrolment
moves and ends) are kept in `BatchWrites` and written with one executemany per table and shape.

Only what a send, a wait or the end of a flow reads and writes is served here; anything else
falls through to the real repository (a different org, a contact outside the batch, a locked
read). The service layer decides which enrolments may run this way (flow_engine.py).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, or_, select

from ..domain.model import Channel, Consent
from ..domain.records import (
    HANDED_OVER,
    NOT_HANDED_OVER,
    Address,
    Audience,
    Contact,
    Direction,
    Enrollment,
    EnrollmentStatus,
    SendWindow,
)
from . import orm
from .enrollments import EnrollmentRepository
from .imports import ALL_CHANNELS, Suppression, SuppressionRepository
from .prepared import Prepared, bind_list, bind_values, in_chunks
from .records import ADDRESS, CONTACT
from .repository import (
    ConsentRepository,
    ContactRepository,
    MessageRepository,
    send_moments,
    status_in,
)

Row = dict[str, Any]

_INSERT_MESSAGES = Prepared(insert(orm.messages))


@functools.lru_cache(maxsize=16)
def _contacts(count: int) -> Prepared:
    return Prepared(select(orm.contacts).where(orm.contacts.c.id.in_(bind_list("w_id", count))))


@functools.lru_cache(maxsize=16)
def _addresses(count: int) -> Prepared:
    return Prepared(select(orm.addresses).where(orm.addresses.c.contact_id.in_(bind_list("w_contact_id", count)))
                    .order_by(orm.addresses.c.id))


@functools.lru_cache(maxsize=64)
def _sends(contacts: int, channels: int) -> Prepared:
    """What `MessageRepository.recent_sends` may count, for many contacts: handed over since
    `w_since`, or not handed over yet."""
    m = orm.messages.c
    return Prepared(select(m.contact_id, m.channel, m.status, m.not_before, m.sent_at).where(and_(
        m.org_id == bindparam("w_org_id"), m.contact_id.in_(bind_list("w_contact_id", contacts)),
        m.direction == Direction.OUT, m.audience == Audience.CUSTOMER, m.channel.in_(bind_list("w_channel", channels)),
        or_(and_(status_in(HANDED_OVER), m.sent_at >= bindparam("w_since")), status_in(NOT_HANDED_OVER)),
    )))


@dataclass
class BatchReads:
    """The rows the steps of one batch read, by the keys the repositories look them up by."""

    enrollments: dict[int, Enrollment] = field(default_factory=dict)  # the claimed rows, by id
    contacts: dict[int, Contact] = field(default_factory=dict)  # by id
    addresses: dict[int, list[Address]] = field(default_factory=dict)  # by contact id, in id order
    consents: dict[tuple[int, str], list[Consent]] = field(default_factory=dict)  # by (org id, address)
    send_windows: dict[int, SendWindow] = field(default_factory=dict)  # by org id, for orgs with caps
    # By (org id, contact id): the contact's outbound rows a cap may count (channel, status, not_before, sent_at).
    sends: dict[tuple[int, int], list[Row]] = field(default_factory=dict)
    suppressions: dict[tuple[int, str], list[Suppression]] = field(default_factory=dict)  # by (org id, address)

    @classmethod
    def load(cls, conn: Connection, enrollments: Sequence[Enrollment],
             send_windows: Mapping[int, SendWindow]) -> BatchReads:
        reads = cls(enrollments={row.id: row for row in enrollments}, send_windows=dict(send_windows))
        contact_ids = [row.contact_id for row in enrollments]
        for chunk in in_chunks(contact_ids):
            statement = _contacts(len(chunk))
            reads.contacts.update((row.id, row) for row in statement.records(conn, bind_values("w_id", chunk), CONTACT))
        reads.addresses = {contact_id: [] for contact_id in reads.contacts}
        for chunk in in_chunks(reads.contacts):
            for address in _addresses(len(chunk)).records(conn, bind_values("w_contact_id", chunk), ADDRESS):
                reads.addresses[address.contact_id].append(address)
        reads._load_consents(conn, enrollments)
        reads._load_sends(conn, enrollments)
        return reads

    def _load_consents(self, conn: Connection, enrollments: Sequence[Enrollment]) -> None:
        wanted: dict[int, dict[str, None]] = {}  # org id -> addresses of its enrolled contacts
        for row in enrollments:
            for address in self.addresses.get(row.contact_id, ()):
                wanted.setdefault(row.org_id, {})[address.value] = None
        consents = ConsentRepository(conn)
        suppressions = SuppressionRepository(conn)
        for org_id, addresses in wanted.items():
            self.consents.update(((org_id, address), []) for address in addresses)
            self.suppressions.update(((org_id, address), []) for address in addresses)
            for chunk in in_chunks(addresses):  # an address is in one chunk, whose consents come in id order
                for consent in consents.for_addresses(org_id, chunk):
                    self.consents[(org_id, consent.address)].append(consent)
                for suppression in suppressions.for_addresses(org_id, chunk):
                    self.suppressions[(org_id, suppression.address)].append(suppression)

    def _load_sends(self, conn: Connection, enrollments: Sequence[Enrollment]) -> None:
        for org_id, window in self.send_windows.items():
            contact_ids = [row.contact_id for row in enrollments if row.org_id == org_id]
            self.sends.update(((org_id, contact_id), []) for contact_id in contact_ids)
            channels = sorted(channel.value for channel in window.channels)
            for chunk in in_chunks(contact_ids):
                params = {"w_org_id": org_id, "w_since": window.since, **bind_values("w_contact_id", chunk),
                          **bind_values("w_channel", channels)}
                for row in _sends(len(chunk), len(channels)).rows(conn, params):
                    self.sends[(org_id, row.pop("contact_id"))].append(row)


@dataclass
class BatchWrites:
    """Outbox rows, history rows and enrolment changes, kept until `flush` writes them."""

    messages: list[Row] = field(default_factory=list)
    steps: list[Row] = field(default_factory=list)
    changes: dict[int, Row] = field(default_factory=dict)  # enrolment id -> columns to set
    # Queued rows added to `BatchReads.sends`: the contact's list there, and the entry.
    planned: list[tuple[list[Row], Row]] = field(default_factory=list)

    def mark(self) -> tuple[int, int, int]:
        return len(self.messages), len(self.steps), len(self.planned)

    def undo(self, mark: tuple[int, int, int], enrollment_id: int) -> None:
        """Forget what one enrolment wrote since `mark` (its step failed)."""
        del self.messages[mark[0]:]
        del self.steps[mark[1]:]
        self.changes.pop(enrollment_id, None)
        for sends, entry in self.planned[mark[2]:]:
            sends.remove(entry)
        del self.planned[mark[2]:]

    def __bool__(self) -> bool:
        return bool(self.messages or self.steps or self.changes)

    def flush(self, conn: Connection) -> None:
        by_columns: dict[tuple[str, ...], list[Row]] = {}
        for message in self.messages:
            by_columns.setdefault(tuple(message), []).append(message)
        for rows in by_columns.values():
            _INSERT_MESSAGES.executemany(conn, rows)
        enrollments = EnrollmentRepository(conn)
        enrollments.log_steps(self.steps)
        enrollments.change_many(self.changes)
        self.messages, self.steps, self.changes, self.planned = [], [], {}, []


class PreloadedContacts(ContactRepository):
    def __init__(self, conn: Connection, reads: BatchReads) -> None:
        super().__init__(conn)
        self.reads = reads

    def get(self, org_id: int, contact_id: int, *, lock: bool = False) -> Contact:
        row = self.reads.contacts.get(contact_id)
        if row is None or row.org_id != org_id or lock:
            return super().get(org_id, contact_id, lock=lock)
        return row

    def addresses(self, contact_id: int) -> list[Address]:
        rows = self.reads.addresses.get(contact_id)
        if rows is None:
            return super().addresses(contact_id)
        return list(rows)


class PreloadedConsents(ConsentRepository):
    def __init__(self, conn: Connection, reads: BatchReads) -> None:
        super().__init__(conn)
        self.reads = reads

    def get(self, org_id: int, address: str, channel: Channel, *, lock: bool = False) -> Consent:
        found = self.reads.consents.get((org_id, address))
        if found is None or lock:
            return super().get(org_id, address, channel, lock=lock)
        for consent in found:
            if consent.channel is channel:
                return _copy(consent)
        return Consent(channel=channel, address=address, org_id=org_id)

    def for_addresses(self, org_id: int, addresses: Sequence[str]) -> list[Consent]:
        keys = [(org_id, address) for address in dict.fromkeys(addresses)]
        if not all(key in self.reads.consents for key in keys):
            return super().for_addresses(org_id, addresses)
        found = [consent for key in keys for consent in self.reads.consents[key]]
        return [_copy(consent) for consent in sorted(found, key=lambda consent: consent.id or 0)]


class PreloadedSuppressions(SuppressionRepository):
    def __init__(self, conn: Connection, reads: BatchReads) -> None:
        super().__init__(conn)
        self.reads = reads

    def reason_for(self, org_id: int, address: str, channel: Channel) -> str | None:
        found = self.reads.suppressions.get((org_id, address))
        if found is None:
            return super().reason_for(org_id, address, channel)
        return next((s.reason for s in found if s.channel in (channel.value, ALL_CHANNELS)), None)


def _copy(consent: Consent) -> Consent:
    """A consent of the preload for a caller, which may change it (as the consent machine
    does). `copy.copy` does the same through the pickle protocol, four times slower."""
    clone = object.__new__(Consent)
    clone.__dict__.update(consent.__dict__)
    return clone


class BufferedMessages(MessageRepository):
    """Recent sends from the batch's reads; new messages kept in `BatchWrites`."""

    def __init__(self, conn: Connection, reads: BatchReads, writes: BatchWrites) -> None:
        super().__init__(conn)
        self.reads = reads
        self.writes = writes

    def recent_sends(self, org_id: int, contact_id: int, channels: Iterable[Channel],
                     since: datetime, *, planned_from: datetime | None = None) -> list[datetime]:
        wanted = frozenset(channel.value for channel in channels)
        window = self.reads.send_windows.get(org_id)
        sends = self.reads.sends.get((org_id, contact_id))
        if window is None or sends is None or since < window.since \
                or not wanted <= {channel.value for channel in window.channels}:
            return super().recent_sends(org_id, contact_id, map(Channel, wanted), since, planned_from=planned_from)
        rows = [row for row in sends if row["channel"] in wanted
                and (row["status"] in NOT_HANDED_OVER or (row["sent_at"] is not None and row["sent_at"] >= since))]
        return send_moments(rows, planned_from)

    def add(self, **values: Any) -> int:
        """Keep the row for `flush`. Its id is not known before then: 0 stands for it (the
        senders of a batched step do not use it). A queued row also joins the contact's preloaded
        sends, so the caps of a later step of the batch count it as if it were written."""
        self.writes.messages.append(values)
        sends = self.reads.sends.get((values["org_id"], values.get("contact_id")))  # type: ignore[arg-type]
        if sends is not None and values.get("direction") == Direction.OUT and values.get("status") in NOT_HANDED_OVER:
            entry = {"channel": values["channel"], "status": values["status"],
                     "not_before": values.get("not_before"), "sent_at": None}
            sends.append(entry)
            self.writes.planned.append((sends, entry))
        return 0


class BufferedEnrollments(EnrollmentRepository):
    """History rows, moves and ends kept in `BatchWrites`; a claimed enrolment read back with
    the changes not yet written."""

    def __init__(self, conn: Connection, reads: BatchReads, writes: BatchWrites) -> None:
        super().__init__(conn)
        self.reads = reads
        self.writes = writes

    def get(self, enrollment_id: int) -> Enrollment | None:
        row = self.reads.enrollments.get(enrollment_id)
        if row is None:
            return super().get(enrollment_id)
        changes = self.writes.changes.get(enrollment_id)
        return replace(row, **changes) if changes else row

    def move(self, enrollment_id: int, pc: int, next_run_at: datetime | None) -> None:
        self._change(enrollment_id, {"pc": pc, "next_run_at": next_run_at})

    def end(self, enrollment_id: int, status: EnrollmentStatus, reason: str, now: datetime) -> None:
        self._change(enrollment_id, {"status": status, "end_reason": reason, "ended_at": now, "next_run_at": None})

    def _change(self, enrollment_id: int, values: Row) -> None:
        self.writes.changes[enrollment_id] = {**self.writes.changes.get(enrollment_id, {}), **values}

    def end_many(self, ended: Sequence[tuple[int, int]], status: EnrollmentStatus, reason: str, now: datetime) -> None:
        for enrollment_id, pc in ended:  # kept with the batch's other writes, in order
            self.end(enrollment_id, status, reason, now)
            self.log_step(enrollment_id, pc, status, reason, now)

    def log_step(self, enrollment_id: int, pc: int, step: str, outcome: str, now: datetime) -> None:
        self.writes.steps.append({"enrollment_id": enrollment_id, "pc": pc, "step": step, "outcome": outcome,
                                  "at": now})
