"""The consent report's modes (`domain/reports.assemble`): each entry under the mode recorded with
it, an entry without one under its own org's current mode of the channel, and the mode filter."""

from __future__ import annotations

from datetime import UTC, datetime

from optflow.domain.model import Channel, Mode
from optflow.domain.reports import ConversionRow, CountRow, Counts, assemble

SINCE, UNTIL = datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC)
PARENT, BRANCH = 1, 2
NOW = {PARENT: {Channel.TEXT: Mode.AUTO}, BRANCH: {Channel.TEXT: Mode.DISCLAIMER}}
NAMES = {PARENT: "Acme", BRANCH: "Acme West"}


def opt_ins(org: int, mode: Mode | None, n: int = 1) -> CountRow:
    return CountRow(org, Channel.TEXT, "keyword", mode, Counts(opt_ins=n), entries=n)


def test_an_entry_without_a_mode_counts_under_its_own_orgs_current_mode() -> None:
    report = assemble(SINCE, UNTIL, [opt_ins(PARENT, Mode.CONSENT, 2), opt_ins(PARENT, None), opt_ins(BRANCH, None)],
                      [], NOW, NAMES, org_id=PARENT)
    assert {mode: c.opt_ins for mode, c in report.by_mode.items()} == {
        Mode.CONSENT: 2, Mode.AUTO: 1, Mode.DISCLAIMER: 1}
    assert report.entries_without_mode == 2
    assert [(o.org_id, o.counts.opt_ins) for o in report.by_org] == [(PARENT, 3), (BRANCH, 1)]
    assert report.modes[Channel.TEXT] is Mode.AUTO  # the channel's mode now, in the org asked about


def test_the_mode_filter_keeps_the_entries_and_conversions_made_under_it() -> None:
    conversions = [ConversionRow(PARENT, Channel.TEXT, Mode.CONSENT, Counts(requested_addresses=2, converted=1)),
                   ConversionRow(BRANCH, Channel.TEXT, None, Counts(requested_addresses=5, converted=5))]
    rows = [opt_ins(PARENT, Mode.CONSENT), opt_ins(BRANCH, None, 5)]
    consent = assemble(SINCE, UNTIL, rows, conversions, NOW, NAMES, org_id=PARENT, mode=Mode.CONSENT)
    assert (consent.totals.opt_ins, consent.totals.requested_addresses, consent.totals.converted) == (1, 2, 1)
    assert consent.entries_without_mode == 0 and list(consent.by_mode) == [Mode.CONSENT]
    disclaimer = assemble(SINCE, UNTIL, rows, conversions, NOW, NAMES, org_id=PARENT, mode=Mode.DISCLAIMER)
    assert (disclaimer.totals.opt_ins, disclaimer.totals.conversion_rate) == (5, 1.0)
    assert disclaimer.entries_without_mode == 5
    assert [(m.mode, m.counts.opt_ins) for m in disclaimer.by_method] == [(Mode.DISCLAIMER, 5)]
