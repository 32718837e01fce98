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

Each entry is counted under the mode its org ran the channel in when the entry was written
(`ledger.mode`). Entries written before the ledger kept the mode have none: they are counted
under the channel's current mode in their org, and the report says how many there were
(`entries_without_mode`). A report for a parent org counts its sub-orgs' entries too (each under
its own org's mode), with a breakdown per org. Conversion is counted per org, channel and the
mode of the request: an address asked under two modes in one period counts once under each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
    mode: Mode  # the mode the entries were written under (or counted under: `mode_of`)


@dataclass(frozen=True, slots=True)
class CountRow:
    """The ledger's counts of one org, channel, method and recorded mode (None: written before
    the ledger kept the mode)."""

    org_id: int
    channel: Channel
    method: str | None
    mode: Mode | None
    counts: Counts
    entries: int  # how many counted entries the row stands for


@dataclass(frozen=True, slots=True)
class ConversionRow:
    """The conversions of the requests of one org, channel and recorded mode."""

    org_id: int
    channel: Channel
    mode: Mode | None
    counts: Counts


@dataclass
class OrgCounts:
    org_id: int
    name: str
    counts: Counts = field(default_factory=Counts)


@dataclass
class ConsentReport:
    since: datetime
    until: datetime
    totals: Counts = field(default_factory=Counts)
    by_channel: dict[Channel, Counts] = field(default_factory=dict)
    modes: dict[Channel, Mode] = field(default_factory=dict)  # the mode each channel runs in now (the org asked)
    by_mode: dict[Mode, Counts] = field(default_factory=dict)  # by the mode each entry was written under
    by_method: list[MethodCounts] = field(default_factory=list)
    by_org: list[OrgCounts] = field(default_factory=list)
    mode: Mode | None = None  # only entries written under this mode were counted
    entries_without_mode: int = 0  # counted under their channel's current mode (written before it was kept)


@dataclass(frozen=True, slots=True)
class DayCounts:
    day: date
    channel: Channel
    method: str | None
    opt_ins: int
    opt_outs: int
    requests: int
    reauthorizations: int
    org_id: int
    mode: Mode | None  # as recorded with the entries (None: written before it was kept)


def mode_of(recorded: Mode | None, org_id: int, channel: Channel,
            current: Mapping[int, Mapping[Channel, Mode]]) -> Mode:
    """The mode an entry counts under: the one recorded with it, else its org's current mode of
    the channel."""
    if recorded is not None:
        return recorded
    return current.get(org_id, {}).get(channel, Mode.CONSENT)


def assemble(since: datetime, until: datetime, rows: Sequence[CountRow], conversions: Sequence[ConversionRow],
             modes: Mapping[int, Mapping[Channel, Mode]], orgs: Mapping[int, str], *, org_id: int,
             mode: Mode | None = None) -> ConsentReport:
    """The report of `org_id` (and of the other orgs in `orgs`, its sub-orgs) from the ledger's
    counts. `modes` maps each org to the mode each channel runs in now; `mode`, if given, keeps
    only the entries written under it."""
    report = ConsentReport(since=since, until=until, mode=mode,
                           modes={ch: modes.get(org_id, {}).get(ch, Mode.CONSENT) for ch in Channel})
    per_org = {org: OrgCounts(org, name) for org, name in orgs.items()}
    per_method: dict[tuple[Channel, Mode, str | None], Counts] = {}

    def count(org: int, channel: Channel, under: Mode, counts: Counts) -> None:
        report.by_channel.setdefault(channel, Counts()).add(counts)
        report.by_mode.setdefault(under, Counts()).add(counts)
        per_org.setdefault(org, OrgCounts(org, str(org))).counts.add(counts)
        report.totals.add(counts)

    for row in rows:
        under = mode_of(row.mode, row.org_id, row.channel, modes)
        if mode is not None and under is not mode:
            continue
        if row.mode is None:
            report.entries_without_mode += row.entries
        count(row.org_id, row.channel, under, row.counts)
        per_method.setdefault((row.channel, under, row.method), Counts()).add(row.counts)
    for conversion in conversions:
        under = mode_of(conversion.mode, conversion.org_id, conversion.channel, modes)
        if mode is None or under is mode:
            count(conversion.org_id, conversion.channel, under, conversion.counts)
    report.by_method = [MethodCounts(channel, method, counts, under) for (channel, under, method), counts in
                        sorted(per_method.items(), key=lambda item: (item[0][0], item[0][1], item[0][2] or ""))]
    report.by_channel = dict(sorted(report.by_channel.items()))
    report.by_mode = dict(sorted(report.by_mode.items()))
    report.by_org = sorted(per_org.values(), key=lambda org: (org.org_id != org_id, org.org_id))
    return report
