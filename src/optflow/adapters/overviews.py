"""Reads for the console's supervisor and flows pages: the outbound messages that wait or failed,
and where the running enrolments are."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, desc, func, or_, select

from ..domain.records import Audience, Direction, Enrollment, Message, MessageStatus
from . import orm
from .records import ENROLLMENT, MESSAGE

_m = orm.messages.c
_e = orm.enrollments.c
_RUNNING = ("active", "paused")


class OverviewRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def outbound_waiting(self, org_id: int, now: datetime, limit: int = 200) -> list[tuple[Message, str | None]]:
        """Messages to customers that are held, deferred (queued for later than `now`) or failed,
        newest first, with the contact's name."""
        query = (select(orm.messages, orm.contacts.c.name)
                 .select_from(orm.messages.outerjoin(orm.contacts, orm.contacts.c.id == _m.contact_id))
                 .where(_m.org_id == org_id, _m.direction == Direction.OUT, _m.audience == Audience.CUSTOMER,
                        or_(_m.status.in_((MessageStatus.HELD, MessageStatus.FAILED)),
                            and_(_m.status == MessageStatus.QUEUED, _m.not_before > now)))
                 .order_by(desc(_m.id)).limit(limit))
        width = len(orm.messages.c)
        return [(MESSAGE(row[:width]), row[width]) for row in self.conn.execute(query)]

    def enrolments_per_step(self, org_id: int) -> list[tuple[str, str, int, str, int]]:
        """(flow, version, pc, status, how many) of the org's running enrolments."""
        query = (select(_e.flow_name, _e.flow_version, _e.pc, _e.status, func.count())
                 .where(_e.org_id == org_id, _e.status.in_(_RUNNING))
                 .group_by(_e.flow_name, _e.flow_version, _e.pc, _e.status)
                 .order_by(_e.flow_name, _e.flow_version, _e.pc, _e.status))
        return [(row[0], row[1], int(row[2]), str(row[3]), int(row[4])) for row in self.conn.execute(query)]

    def running_in_flow(self, org_id: int, flow_name: str, limit: int = 100) -> list[tuple[Enrollment, str]]:
        """The flow's running enrolments, oldest first, with the contact's name."""
        query = (select(orm.enrollments, orm.contacts.c.name)
                 .select_from(orm.enrollments.join(orm.contacts, orm.contacts.c.id == _e.contact_id))
                 .where(_e.org_id == org_id, _e.flow_name == flow_name, _e.status.in_(_RUNNING))
                 .order_by(_e.id).limit(limit))
        width = len(orm.enrollments.c)
        return [(ENROLLMENT(row[:width]), str(row[width] or "")) for row in self.conn.execute(query)]
