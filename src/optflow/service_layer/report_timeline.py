"""Consent counts over time, for the reports' charts: opt-ins, opt-outs, opt-in requests and
re-authorisations per day (per week over long periods), optionally for one channel, one method
or one mode. Counted from the ledger as the consent report counts (`reports.py`): the org's
entries and its sub-orgs', each under the mode recorded with it (entries written before the
ledger kept the mode: their org's current mode of the channel)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

from ..domain.model import Channel, InvalidInput, Mode
from ..domain.reports import mode_of
from .reports import current_modes, reported_orgs
from .unit_of_work import UnitOfWork

METRICS: dict[str, str] = {"opt_ins": "Opt-ins", "opt_outs": "Opt-outs", "requests": "Opt-in requests",
                           "reauthorizations": "Re-authorisations"}
DAILY_UP_TO = 92  # days; a longer period is counted per week
LONGEST = 3 * 366  # days a period may span


@dataclass
class Timeline:
    first: date
    last: date
    bucket: str  # "day" or "week"
    starts: list[date]  # the first day of each bucket
    series: dict[str, list[int]]  # metric -> count per bucket
    channel: Channel | None = None
    method: str | None = None
    mode: Mode | None = None
    methods: list[str] = field(default_factory=list)  # the methods seen in the period, for choosing one

    def totals(self) -> dict[str, int]:
        return {metric: sum(counts) for metric, counts in self.series.items()}

    def rows(self) -> list[list[str | int]]:
        """The table behind the chart (and its CSV): one row per bucket."""
        rows: list[list[str | int]] = [["period_start", *METRICS]]
        for i, start in enumerate(self.starts):
            rows.append([start.isoformat(), *(self.series[metric][i] for metric in METRICS)])
        return rows


def timeline(uow: UnitOfWork, org_id: int, first: date, last: date, *, channel: Channel | None = None,
             method: str | None = None, mode: Mode | None = None, include_sub_orgs: bool = True) -> Timeline:
    if first > last:
        raise InvalidInput(f"the period starts ({first}) after it ends ({last})", code="invalid_period")
    if (last - first).days >= LONGEST:
        raise InvalidInput(f"a period spans at most {LONGEST} days", code="invalid_period")
    orgs = reported_orgs(uow, org_id, include_sub_orgs)
    modes = current_modes(uow, orgs)
    channels = set(Channel) if channel is None else {channel}
    bucket_days = 1 if (last - first).days < DAILY_UP_TO else 7
    starts = [first + timedelta(days=d) for d in range(0, (last - first).days + 1, bucket_days)]
    series = {metric: [0] * len(starts) for metric in METRICS}
    since = datetime.combine(first, time.min, tzinfo=UTC)
    until = datetime.combine(last + timedelta(days=1), time.min, tzinfo=UTC)
    methods: set[str] = set()
    for row in uow.report_series.daily([org.id for org in orgs], since, until):
        if row.channel not in channels:
            continue
        if mode is not None and mode_of(row.mode, row.org_id, row.channel, modes) is not mode:
            continue
        if row.method:
            methods.add(row.method)
        if method is not None and row.method != method:
            continue
        index = (row.day - first).days // bucket_days
        for metric in METRICS:
            series[metric][index] += getattr(row, metric)
    return Timeline(first, last, "day" if bucket_days == 1 else "week", starts, series, channel, method, mode,
                    sorted(methods))
