"""Employees' inboxes: the notes optflow writes for them and what each person has read.

A note is a `messages` row with audience `employee` (status `delivered`: stored, never sent). Its
`agent_id` names the person it is for; a note without one is for every person of the org. Who
read what is kept in `note_reads`, one row per person and note.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, desc, exists, func, insert, literal, or_, select
from sqlalchemy.sql import ColumnElement

from ..domain.model import Channel
from ..domain.records import Audience, Direction, Note
from . import orm
from .prepared import Prepared
from .records import MESSAGE

_m = orm.messages.c

# Who last wrote to a customer: asked for every note to an employee, so built once (docs/performance.md).
_LAST_AGENT_FOR = Prepared(select(_m.agent_id).where(
    _m.org_id == bindparam("w_org_id"), _m.address == bindparam("w_address"), _m.channel == bindparam("w_channel"),
    _m.direction == Direction.OUT, _m.audience == Audience.CUSTOMER, _m.agent_id.is_not(None),
).order_by(desc(_m.id)).limit(1))
_r = orm.note_reads.c


def _for_person(org_id: int, agent_id: int) -> ColumnElement[bool]:
    return and_(_m.org_id == org_id, _m.audience == Audience.EMPLOYEE,
                or_(_m.agent_id == agent_id, _m.agent_id.is_(None)))


def _read_by(agent_id: int) -> ColumnElement[bool]:
    return exists().where(_r.agent_id == agent_id, _r.message_id == _m.id)


class InboxRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def notes(self, org_id: int, agent_id: int, *, unread_only: bool = False, limit: int = 50,
              offset: int = 0) -> list[Note]:
        """The person's notes, newest first, each with the contact's name and whether it was read."""
        read = _read_by(agent_id)
        wanted = [_for_person(org_id, agent_id), ~read] if unread_only else [_for_person(org_id, agent_id)]
        query = (select(orm.messages, orm.contacts.c.name, read.label("read"))
                 .select_from(orm.messages.outerjoin(orm.contacts, orm.contacts.c.id == _m.contact_id))
                 .where(*wanted).order_by(desc(_m.id)).limit(limit).offset(offset))
        width = len(orm.messages.c)
        return [Note(MESSAGE(row[:width]), row[width], bool(row[width + 1])) for row in self.conn.execute(query)]

    def unread_count(self, org_id: int, agent_id: int) -> int:
        query = select(func.count()).select_from(orm.messages).where(_for_person(org_id, agent_id),
                                                                     ~_read_by(agent_id))
        return int(self.conn.execute(query).scalar_one())

    def mark_read(self, org_id: int, agent_id: int, message_ids: Sequence[int] | None, now: datetime) -> int:
        """Mark the person's unread notes among `message_ids` (None: all of them) read; returns how
        many. A note of another person or org is left alone."""
        wanted = [_for_person(org_id, agent_id), ~_read_by(agent_id)]
        if message_ids is not None:
            if not message_ids:
                return 0
            wanted.append(_m.id.in_(list(message_ids)))
        rows = select(literal(agent_id), _m.id, literal(now, orm.UtcDateTime())).where(*wanted)
        statement = insert(orm.note_reads).from_select(["agent_id", "message_id", "read_at"], rows) \
            .returning(_r.message_id)  # counted from RETURNING: psycopg gives no rowcount for INSERT ... SELECT
        return len(self.conn.execute(statement).all())

    def last_agent_for(self, org_id: int, address: str, channel: Channel) -> int | None:
        """The person who last wrote to `address` on `channel` (their message may be held): whom a
        note about the customer's answer is for."""
        value = _LAST_AGENT_FOR.scalar(self.conn, {"w_org_id": org_id, "w_address": address,
                                                   "w_channel": channel.value})
        return int(value) if value is not None else None
