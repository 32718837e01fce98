"""Consent reports for an org over a period (domain/reports.py says what counts)."""

from __future__ import annotations

from datetime import datetime

from ..domain.model import Channel
from ..domain.reports import ConsentReport, assemble
from .unit_of_work import UnitOfWork


def consent_report(uow: UnitOfWork, org_id: int, since: datetime, until: datetime) -> ConsentReport:
    """The org's report of entries recorded in [since, until), each channel under its mode now."""
    settings = uow.orgs.settings(org_id)
    by_method, conversions = uow.reports.consent_counts(org_id, since, until)
    return assemble(since, until, by_method, conversions, {channel: settings.mode(channel) for channel in Channel})
