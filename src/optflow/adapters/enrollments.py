"""Enrolments of contacts in flows, and the flow versions they run on."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, bindparam, insert, literal, select, update

from ..domain.records import RUNNING, Enrollment, EnrollmentStatus, FlowVersion
from . import orm
from .prepared import READ_AHEAD_CHUNK, Prepared, bind_list, bind_values, in_chunks
from .records import ENROLLMENT, FLOW_VERSION

Row = dict[str, Any]

# Built once (see repository.py): enrolments are read and moved on every inbound message and
# every due step. WHERE parameters are prefixed with `w_`, apart from the SET columns.
_ENROLLMENT = Prepared(select(orm.enrollments).where(orm.enrollments.c.id == bindparam("w_id")))
_INSERT_ENROLLMENT = Prepared(insert(orm.enrollments))
_UPDATE_ENROLLMENT = Prepared(update(orm.enrollments).where(orm.enrollments.c.id == bindparam("w_id")))
_INSERT_STEP = Prepared(insert(orm.enrollment_steps))
_INSERT_STEPS = Prepared(insert(orm.enrollment_steps))
_UPDATE_ENROLLMENTS = Prepared(_UPDATE_ENROLLMENT.statement)
_DUE = select(orm.enrollments).where(and_(
    orm.enrollments.c.status == EnrollmentStatus.ACTIVE, orm.enrollments.c.next_run_at <= bindparam("w_now")
)).order_by(orm.enrollments.c.next_run_at, orm.enrollments.c.id).limit(bindparam("w_limit"))
_CLAIM_DUE = Prepared(_DUE)
_CLAIM_DUE_SKIP_LOCKED = Prepared(_DUE.with_for_update(skip_locked=True))


@functools.lru_cache(maxsize=16)
def _for_contact(statuses: tuple[EnrollmentStatus, ...]) -> Prepared:
    return Prepared(select(orm.enrollments).where(and_(
        orm.enrollments.c.contact_id == bindparam("w_contact_id"),
        orm.enrollments.c.status.in_([literal(s.value) for s in statuses]),
    )).order_by(orm.enrollments.c.id))


@functools.lru_cache(maxsize=16)
def _running_for_contacts(count: int) -> Prepared:
    return Prepared(select(orm.enrollments).where(and_(
        orm.enrollments.c.contact_id.in_(bind_list("w_contact_id", count)),
        orm.enrollments.c.status.in_([literal(s.value) for s in RUNNING]),
    )).order_by(orm.enrollments.c.id))


@functools.lru_cache(maxsize=16)
def _any_for(statuses: tuple[EnrollmentStatus, ...]) -> Prepared:
    return Prepared(select(orm.enrollments.c.id).where(and_(
        orm.enrollments.c.contact_id == bindparam("w_contact_id"), orm.enrollments.c.flow_name == bindparam("w_flow"),
        orm.enrollments.c.status.in_([literal(s.value) for s in statuses]),
    )).limit(1))


class EnrollmentRepository:
    """Enrolments and flow versions. A contact's enrolments, once read, are kept until this
    repository changes an enrolment: handling one inbound message asks for them up to three
    times (flow exits on the consent change, the opt-out's cancellations, the reply exit)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._for_contact: dict[tuple[int, tuple[EnrollmentStatus, ...]], list[Enrollment]] = {}

    def _changed(self, contact_id: int | None = None, enrollment_ids: Iterable[int] = ()) -> None:
        """Forget what a write may have changed: the enrolments of `contact_id`, or those lists
        that hold one of `enrollment_ids`; everything when neither says (or an id is in no list,
        so its contact is not known here)."""
        if contact_id is not None:
            for key in [key for key in self._for_contact if key[0] == contact_id]:
                del self._for_contact[key]
            return
        ids = set(enrollment_ids)
        if not ids:
            self._for_contact.clear()
            return
        holding = [key for key, rows in self._for_contact.items() if any(row.id in ids for row in rows)]
        found = {row.id for key in holding for row in self._for_contact[key]} & ids
        if found != ids:
            self._for_contact.clear()
            return
        for key in holding:
            del self._for_contact[key]

    def forget_reads(self) -> None:
        """A savepoint rolled back: enrolments read since may no longer be as read."""
        self._for_contact.clear()

    def read_ahead(self, contact_ids: Sequence[int]) -> None:
        """Read the running enrolments of many contacts in one statement (a batch's senders),
        kept like those `for_contact` reads one contact at a time."""
        wanted = [contact_id for contact_id in contact_ids if (contact_id, RUNNING) not in self._for_contact]
        for chunk in in_chunks(wanted, READ_AHEAD_CHUNK):
            found: dict[int, list[Enrollment]] = {contact_id: [] for contact_id in chunk}
            for row in _running_for_contacts(len(chunk)).records(self.conn, bind_values("w_contact_id", chunk),
                                                                 ENROLLMENT):
                found[row.contact_id].append(row)
            for contact_id, rows in found.items():
                self._for_contact[(contact_id, RUNNING)] = rows

    def remember_version(self, name: str, version: str, source_file: str, source: str, now: datetime) -> None:
        exists = self.conn.execute(select(orm.flow_versions.c.id).where(and_(
            orm.flow_versions.c.name == name, orm.flow_versions.c.version == version
        ))).first()
        if exists is None:
            self.conn.execute(insert(orm.flow_versions).values(
                name=name, version=version, source_file=source_file, source=source, loaded_at=now
            ))

    def version_source(self, name: str, version: str) -> FlowVersion | None:
        row = self.conn.execute(select(orm.flow_versions).where(and_(
            orm.flow_versions.c.name == name, orm.flow_versions.c.version == version
        ))).first()
        return FLOW_VERSION(row) if row else None

    def create(self, org_id: int, contact_id: int, flow_name: str, flow_version: str,
               event: Mapping[str, Any], now: datetime) -> int:
        self._changed(contact_id=contact_id)
        return _INSERT_ENROLLMENT.insert(self.conn, {
            "org_id": org_id, "contact_id": contact_id, "flow_name": flow_name, "flow_version": flow_version,
            "pc": 0, "status": EnrollmentStatus.ACTIVE, "next_run_at": now,
            "event_json": json.dumps(dict(event), default=str),
            "started_at": now,
        })

    def get(self, enrollment_id: int) -> Enrollment | None:
        return _ENROLLMENT.record(self.conn, {"w_id": enrollment_id}, ENROLLMENT)

    def for_contact(self, contact_id: int, statuses: tuple[EnrollmentStatus, ...] = RUNNING) -> list[Enrollment]:
        key = (contact_id, statuses)
        rows = self._for_contact.get(key)
        if rows is None:
            rows = self._for_contact[key] = _for_contact(statuses).records(self.conn, {"w_contact_id": contact_id},
                                                                          ENROLLMENT)
        return list(rows)

    def any_for(self, contact_id: int, flow_name: str, statuses: tuple[EnrollmentStatus, ...]) -> bool:
        return _any_for(statuses).first(self.conn, {"w_contact_id": contact_id, "w_flow": flow_name}) is not None

    def claim_due(self, now: datetime, limit: int, skip_locked: bool) -> list[Enrollment]:
        statement = _CLAIM_DUE_SKIP_LOCKED if skip_locked else _CLAIM_DUE
        return statement.records(self.conn, {"w_now": now, "w_limit": limit}, ENROLLMENT)

    def move(self, enrollment_id: int, pc: int, next_run_at: datetime | None) -> None:
        self._changed(enrollment_ids=(enrollment_id,))
        _UPDATE_ENROLLMENT.execute(self.conn, {"w_id": enrollment_id, "pc": pc, "next_run_at": next_run_at})

    def end(self, enrollment_id: int, status: EnrollmentStatus, reason: str, now: datetime) -> None:
        self._changed(enrollment_ids=(enrollment_id,))
        _UPDATE_ENROLLMENT.execute(self.conn, {"w_id": enrollment_id, "status": status, "end_reason": reason,
                                               "ended_at": now, "next_run_at": None})

    def end_many(self, ended: Sequence[tuple[int, int]], status: EnrollmentStatus, reason: str, now: datetime) -> None:
        """End enrolments, given as (id, pc), and record why in each one's history, with two
        executemany in all: an opt-out can end dozens at once."""
        if not ended:
            return
        self.change_many({enrollment_id: {"status": status, "end_reason": reason, "ended_at": now, "next_run_at": None}
                          for enrollment_id, _ in ended})
        self.log_steps([{"enrollment_id": enrollment_id, "pc": pc, "step": status, "outcome": reason, "at": now}
                        for enrollment_id, pc in ended])

    def pause(self, enrollment_id: int, reason: str) -> None:
        self._changed()
        self.conn.execute(update(orm.enrollments).where(orm.enrollments.c.id == enrollment_id)
                          .values(status=EnrollmentStatus.PAUSED, end_reason=reason))

    def resume(self, enrollment_id: int, now: datetime) -> None:
        """Active again. A wait (or deferral) still running keeps its wake-up time; one that
        ended while the enrolment was paused is due at once."""
        self._changed()
        wake = self.conn.execute(select(orm.enrollments.c.next_run_at)
                                 .where(orm.enrollments.c.id == enrollment_id)).scalar()
        self.conn.execute(update(orm.enrollments).where(orm.enrollments.c.id == enrollment_id)
                          .values(status=EnrollmentStatus.ACTIVE, end_reason=None,
                                  next_run_at=wake if wake is not None and wake > now else now))

    def log_step(self, enrollment_id: int, pc: int, step: str, outcome: str, now: datetime) -> None:
        _INSERT_STEP.insert(self.conn, {"enrollment_id": enrollment_id, "pc": pc, "step": step, "outcome": outcome,
                                        "at": now})

    def log_steps(self, steps: Sequence[Mapping[str, Any]]) -> None:
        """History rows (the columns of `log_step`) written with one executemany."""
        _INSERT_STEPS.executemany(self.conn, list(steps))

    def change_many(self, changes: Mapping[int, Mapping[str, Any]]) -> None:
        """Set columns of many enrolments (enrolment id -> column values), with one executemany
        per set of columns: what `move` and `end` do one row at a time."""
        self._changed(enrollment_ids=changes)
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for enrollment_id, values in changes.items():
            by_columns.setdefault(tuple(sorted(values)), []).append({**values, "w_id": enrollment_id})
        for rows in by_columns.values():
            _UPDATE_ENROLLMENTS.executemany(self.conn, rows)

    def history(self, enrollment_id: int) -> list[Row]:
        q = select(orm.enrollment_steps).where(orm.enrollment_steps.c.enrollment_id == enrollment_id) \
            .order_by(orm.enrollment_steps.c.id)
        return [dict(r) for r in self.conn.execute(q).mappings()]
