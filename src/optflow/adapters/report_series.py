"""Consent counts per day from the ledger, for the reports' charts.

What counts is what the consent report counts (`domain/reports.py`): an opt-in is an
`accept`, `confirm_pin` or `record_opt_in` entry that ends in `opted_in` from another state; an
opt-out an `opt_out` entry from another state than `opted_out`; every `request_opt_in` and
`reauthorize` entry. Days are UTC days of `recorded_at`; each entry comes with its org and the mode
recorded with it, so that it is counted under that mode as the report does.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy import Connection, and_, case, func, select
from sqlalchemy.sql import ColumnElement

from ..domain.model import Channel, Mode, State, Trigger
from ..domain.reports import COUNTED_TRIGGERS, OPT_IN_TRIGGERS, DayCounts
from . import orm

_l = orm.ledger.c


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _day(value: object) -> date:
    """SQLite's date() gives text, PostgreSQL's a date."""
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


class ReportSeriesRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def daily(self, org_ids: Sequence[int], since: datetime, until: datetime) -> list[DayCounts]:
        """Counts per UTC day, org, channel, method and recorded mode of the entries of `org_ids`
        recorded in [since, until)."""
        day = func.date(_l.recorded_at)
        query = (
            select(
                day.label("day"), _l.org_id, _l.channel, _l.method, _l.mode,
                _count(and_(_l.trigger.in_(OPT_IN_TRIGGERS), _l.to_state == State.OPTED_IN.value,
                            _l.from_state != State.OPTED_IN.value)).label("opt_ins"),
                _count(and_(_l.trigger == Trigger.OPT_OUT.value, _l.from_state != State.OPTED_OUT.value)).label(
                    "opt_outs"),
                _count(_l.trigger == Trigger.REQUEST_OPT_IN.value).label("requests"),
                _count(_l.trigger == Trigger.REAUTHORIZE.value).label("reauthorizations"),
            )
            .where(_l.org_id.in_(list(org_ids)), _l.recorded_at >= since, _l.recorded_at < until,
                   _l.trigger.in_(COUNTED_TRIGGERS), _l.channel.in_([ch.value for ch in Channel]))
            .group_by(day, _l.org_id, _l.channel, _l.method, _l.mode)
            .order_by(day, _l.org_id, _l.channel, _l.method, _l.mode)
        )
        return [DayCounts(_day(row.day), Channel(row.channel), row.method, int(row.opt_ins), int(row.opt_outs),
                          int(row.requests), int(row.reauthorizations), int(row.org_id),
                          Mode(row.mode) if row.mode in _MODES else None) for row in self.conn.execute(query)]


_MODES = frozenset(mode.value for mode in Mode)
