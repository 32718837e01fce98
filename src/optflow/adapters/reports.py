"""The SQL of the consent reports: aggregates over the ledger."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, and_, case, distinct, exists, func, select
from sqlalchemy.sql import ColumnElement

from ..domain.model import Channel, State, Trigger
from ..domain.reports import COUNTED_TRIGGERS, OPT_IN_TRIGGERS, Counts, MethodCounts
from . import orm


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


class ReportQueries:
    """The ledger's counts for the consent reports (domain/reports.py says what counts)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def consent_counts(self, org_id: int, since: datetime,
                       until: datetime) -> tuple[list[MethodCounts], dict[Channel, Counts]]:
        """Counts per channel and method, and the conversions per channel, of entries recorded in
        [since, until)."""
        return _consent_counts(self.conn, org_id, since, until)


def _consent_counts(conn: Connection, org_id: int, since: datetime,
                    until: datetime) -> tuple[list[MethodCounts], dict[Channel, Counts]]:
    ledger = orm.ledger
    in_period = and_(ledger.c.org_id == org_id, ledger.c.recorded_at >= since, ledger.c.recorded_at < until)
    known_channels = [ch.value for ch in Channel]

    counts_query = (
        select(
            ledger.c.channel,
            ledger.c.method,
            _count(and_(ledger.c.trigger.in_(OPT_IN_TRIGGERS), ledger.c.to_state == State.OPTED_IN.value,
                        ledger.c.from_state != State.OPTED_IN.value)).label("opt_ins"),
            _count(and_(ledger.c.trigger == Trigger.OPT_OUT.value,
                        ledger.c.from_state != State.OPTED_OUT.value)).label("opt_outs"),
            _count(ledger.c.trigger == Trigger.REQUEST_OPT_IN.value).label("requests"),
            _count(ledger.c.trigger == Trigger.REAUTHORIZE.value).label("reauthorizations"),
        )
        .where(in_period, ledger.c.trigger.in_(COUNTED_TRIGGERS), ledger.c.channel.in_(known_channels))
        .group_by(ledger.c.channel, ledger.c.method)
        .order_by(ledger.c.channel, ledger.c.method.asc().nulls_first())
    )

    later = ledger.alias("later")
    became_opt_in = exists().where(
        later.c.org_id == ledger.c.org_id, later.c.address == ledger.c.address,
        later.c.channel == ledger.c.channel, later.c.seq > ledger.c.seq,
        later.c.trigger.in_(OPT_IN_TRIGGERS), later.c.to_state == State.OPTED_IN.value,
    )
    conversion_query = (
        select(
            ledger.c.channel,
            func.count(distinct(ledger.c.address)).label("requested"),
            func.count(distinct(case((became_opt_in, ledger.c.address)))).label("converted"),
        )
        .where(in_period, ledger.c.trigger == Trigger.REQUEST_OPT_IN.value, ledger.c.channel.in_(known_channels))
        .group_by(ledger.c.channel)
    )

    by_method = []
    for row in conn.execute(counts_query):
        by_method.append(MethodCounts(Channel(row.channel), row.method, Counts(
            opt_ins=int(row.opt_ins), opt_outs=int(row.opt_outs), requests=int(row.requests),
            reauthorizations=int(row.reauthorizations))))
    conversions = {Channel(row.channel): Counts(requested_addresses=int(row.requested), converted=int(row.converted))
                   for row in conn.execute(conversion_query)}
    return by_method, conversions
