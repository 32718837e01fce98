"""Consent reports: what counts, and the report assembled from the ledger's counts (the counting
itself is SQL, in adapters/reports.py).

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
from datetime import date, datetime

from .model import Channel, Mode, Trigger

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


@dataclass(frozen=True, slots=True)
class DayCounts:
    day: date
    channel: Channel
    method: str | None
    opt_ins: int
    opt_outs: int
    requests: int
    reauthorizations: int


def assemble(since: datetime, until: datetime, by_method: list[MethodCounts],
             conversions: Mapping[Channel, Counts], modes: Mapping[Channel, Mode]) -> ConsentReport:
    """The report from the counts per channel and method and the conversions per channel;
    `modes` maps each channel to the mode it runs in (the org's settings)."""
    report = ConsentReport(since=since, until=until, by_method=list(by_method))
    for row in by_method:
        report.by_channel.setdefault(row.channel, Counts()).add(row.counts)
    for channel, counts in conversions.items():
        report.by_channel.setdefault(channel, Counts()).add(counts)
    for channel, counts in report.by_channel.items():
        mode = modes.get(channel, Mode.CONSENT)
        report.modes[channel] = mode
        report.by_mode.setdefault(mode, Counts()).add(counts)
        report.totals.add(counts)
    report.by_channel = dict(sorted(report.by_channel.items()))
    report.by_mode = dict(sorted(report.by_mode.items()))
    return report
