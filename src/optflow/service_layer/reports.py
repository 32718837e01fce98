"""Consent reports for an org over a period (domain/reports.py says what counts)."""

from __future__ import annotations

from datetime import datetime

from ..domain.model import Channel, Mode
from ..domain.records import Org
from ..domain.reports import ConsentReport, assemble
from .admin import orgs_under
from .unit_of_work import UnitOfWork


def reported_orgs(uow: UnitOfWork, org_id: int, include_sub_orgs: bool = True) -> list[Org]:
    """The orgs a report of `org_id` covers: the org, and (unless told not to) its sub-orgs at
    every level below it, the org first."""
    return orgs_under(uow, org_id) if include_sub_orgs else [uow.orgs.get(org_id)]


def current_modes(uow: UnitOfWork, orgs: list[Org]) -> dict[int, dict[Channel, Mode]]:
    """The mode each org runs each channel in now (its own settings, inherited key by key)."""
    return {org.id: {channel: uow.orgs.settings(org.id).mode(channel) for channel in Channel} for org in orgs}


def consent_report(uow: UnitOfWork, org_id: int, since: datetime, until: datetime, *, mode: Mode | None = None,
                   include_sub_orgs: bool = True) -> ConsentReport:
    """The report of the entries recorded in [since, until) by the org and (by default) its
    sub-orgs, each under the mode it was written under; with `mode`, only those."""
    orgs = reported_orgs(uow, org_id, include_sub_orgs)
    rows, conversions = uow.reports.consent_counts([org.id for org in orgs], since, until)
    return assemble(since, until, rows, conversions, current_modes(uow, orgs), {org.id: org.name for org in orgs},
                    org_id=org_id, mode=mode)
