"""The SQL of the consent reports: aggregates over the ledger."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, and_, case, distinct, exists, func, select
from sqlalchemy.sql import ColumnElement

from ..domain.model import Channel, Mode, State, Trigger
from ..domain.reports import COUNTED_TRIGGERS, OPT_IN_TRIGGERS, ConversionRow, CountRow, Counts
from . import orm


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def _mode(value: str | None) -> Mode | None:
    return Mode(value) if value in _MODES else None


_MODES = frozenset(mode.value for mode in Mode)


class ReportQueries:
    """The ledger's counts for the consent reports (domain/reports.py says what counts)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def consent_counts(self, org_ids: Sequence[int], since: datetime,
                       until: datetime) -> tuple[list[CountRow], list[ConversionRow]]:
        """Counts per org, channel, method and recorded mode, and the conversions per org,
        channel and recorded mode, of the entries of `org_ids` recorded in [since, until)."""
        return _consent_counts(self.conn, org_ids, since, until)


def _consent_counts(conn: Connection, org_ids: Sequence[int], since: datetime,
                    until: datetime) -> tuple[list[CountRow], list[ConversionRow]]:
    ledger = orm.ledger
    in_period = and_(ledger.c.org_id.in_(list(org_ids)), ledger.c.recorded_at >= since, ledger.c.recorded_at < until)
    known_channels = [ch.value for ch in Channel]

    counts_query = (
        select(
            ledger.c.org_id,
            ledger.c.channel,
            ledger.c.method,
            ledger.c.mode,
            func.count().label("entries"),
            _count(and_(ledger.c.trigger.in_(OPT_IN_TRIGGERS), ledger.c.to_state == State.OPTED_IN.value,
                        ledger.c.from_state != State.OPTED_IN.value)).label("opt_ins"),
            _count(and_(ledger.c.trigger == Trigger.OPT_OUT.value,
                        ledger.c.from_state != State.OPTED_OUT.value)).label("opt_outs"),
            _count(ledger.c.trigger == Trigger.REQUEST_OPT_IN.value).label("requests"),
            _count(ledger.c.trigger == Trigger.REAUTHORIZE.value).label("reauthorizations"),
        )
        .where(in_period, ledger.c.trigger.in_(COUNTED_TRIGGERS), ledger.c.channel.in_(known_channels))
        .group_by(ledger.c.org_id, ledger.c.channel, ledger.c.method, ledger.c.mode)
        .order_by(ledger.c.org_id, ledger.c.channel, ledger.c.method.asc().nulls_first(),
                  ledger.c.mode.asc().nulls_first())
    )

    later = ledger.alias("later")
    became_opt_in = exists().where(
        later.c.org_id == ledger.c.org_id, later.c.address == ledger.c.address,
        later.c.channel == ledger.c.channel, later.c.seq > ledger.c.seq,
        later.c.trigger.in_(OPT_IN_TRIGGERS), later.c.to_state == State.OPTED_IN.value,
    )
    conversion_query = (
        select(
            ledger.c.org_id,
            ledger.c.channel,
            ledger.c.mode,
            func.count(distinct(ledger.c.address)).label("requested"),
            func.count(distinct(case((became_opt_in, ledger.c.address)))).label("converted"),
        )
        .where(in_period, ledger.c.trigger == Trigger.REQUEST_OPT_IN.value, ledger.c.channel.in_(known_channels))
        .group_by(ledger.c.org_id, ledger.c.channel, ledger.c.mode)
    )

    rows = [CountRow(int(row.org_id), Channel(row.channel), row.method, _mode(row.mode), Counts(
        opt_ins=int(row.opt_ins), opt_outs=int(row.opt_outs), requests=int(row.requests),
        reauthorizations=int(row.reauthorizations)), entries=int(row.entries)) for row in conn.execute(counts_query)]
    conversions = [ConversionRow(int(row.org_id), Channel(row.channel), _mode(row.mode),
                                 Counts(requested_addresses=int(row.requested), converted=int(row.converted)))
                   for row in conn.execute(conversion_query)]
    return rows, conversions
