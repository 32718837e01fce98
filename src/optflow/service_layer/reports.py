"""Consent reports, computed from the ledger with SQL aggregates.

What counts (entries recorded in the period, `recorded_at` in [since, until)):
- an opt-in: `accept`, `confirm_pin` or `record_opt_in` that ends in `opted_in` from another state
  (a YES awaiting a PIN is not one yet; the PIN confirmation is);
- an opt-out: `opt_out` from a state other than `opted_out` (a second STOP is not a second opt-out);
- a request: every `request_opt_in`;
- a re-authorisation: every `reauthorize`;
- conversion: of the distinct (address, channel) asked in the period, those with an opt-in entry
  after the request (at any later time).

The ledger does not record the org's mode at the time of each entry, so a channel's counts are
reported under the mode the channel runs in now.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, and_, case, distinct, exists, func, select
from sqlalchemy.sql import ColumnElement

from ..adapters import orm
from ..domain.model import Channel, Mode, State, Trigger

OPT_IN_TRIGGERS = (Trigger.ACCEPT.value, Trigger.CONFIRM_PIN.value, Trigger.RECORD_OPT_IN.value)
COUNTED_TRIGGERS = (*OPT_IN_TRIGGERS, Trigger.OPT_OUT.value, Trigger.REQUEST_OPT_IN.value,
                    Trigger.REAUTHORIZE.value)


@dataclass
class Counts:
    opt_ins: int = 0
    opt_outs: int = 0
    requests: int = 0
    reauthorizations: int = 0
    requested_addresses: int = 0
    converted: int = 0

    def add(self, other: Counts) -> None:
        self.opt_ins += other.opt_ins
        self.opt_outs += other.opt_outs
        self.requests += other.requests
        self.reauthorizations += other.reauthorizations
        self.requested_addresses += other.requested_addresses
        self.converted += other.converted

    @property
    def conversion_rate(self) -> float | None:
        return round(self.converted / self.requested_addresses, 4) if self.requested_addresses else None


@dataclass
class MethodCounts:
    channel: Channel
    method: str | None
    counts: Counts


@dataclass
class ConsentReport:
    since: datetime
    until: datetime
    totals: Counts = field(default_factory=Counts)
    by_channel: dict[Channel, Counts] = field(default_factory=dict)
    modes: dict[Channel, Mode] = field(default_factory=dict)
    by_mode: dict[Mode, Counts] = field(default_factory=dict)
    by_method: list[MethodCounts] = field(default_factory=list)


def _count(condition: ColumnElement[bool]) -> ColumnElement[int]:
    return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)


def consent_report(conn: Connection, org_id: int, since: datetime, until: datetime,
                   modes: Mapping[Channel, Mode]) -> ConsentReport:
    """Counts for one org; `modes` maps each channel to the mode it runs in (the org's settings)."""
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

    report = ConsentReport(since=since, until=until)
    for row in conn.execute(counts_query):
        channel = Channel(row.channel)
        counts = Counts(opt_ins=int(row.opt_ins), opt_outs=int(row.opt_outs), requests=int(row.requests),
                        reauthorizations=int(row.reauthorizations))
        report.by_method.append(MethodCounts(channel, row.method, counts))
        report.by_channel.setdefault(channel, Counts()).add(counts)
    for row in conn.execute(conversion_query):
        report.by_channel.setdefault(Channel(row.channel), Counts()).add(
            Counts(requested_addresses=int(row.requested), converted=int(row.converted)))
    for channel, counts in report.by_channel.items():
        mode = modes.get(channel, Mode.CONSENT)
        report.modes[channel] = mode
        report.by_mode.setdefault(mode, Counts()).add(counts)
        report.totals.add(counts)
    report.by_channel = dict(sorted(report.by_channel.items()))
    report.by_mode = dict(sorted(report.by_mode.items()))
    return report
