"""The consent clock: periodic sweeps that age consents.

- `expire`: an opted-in consent older than the org's re-authorisation period for its channel
  ("contact control rules") becomes `reauth_due`; flows triggered on `reauth_due` then ask again.
- `lapse`: an opt-in request left unanswered for the org's window (default 30 days) goes back
  to `unknown`.
Both work in batches, one transaction per batch, and are plain functions of `now`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..domain.machine import TransitionContext
from ..domain.model import Actor, ActorKind, Channel, Trigger
from .handlers import Services, decide_change
from .unit_of_work import UnitOfWorkFactory

SWEEPER = Actor(ActorKind.SYSTEM, "consent-clock")


@dataclass
class SweepReport:
    expired: int = 0
    lapsed: int = 0


def sweep_consents(uows: UnitOfWorkFactory, services: Services, now: datetime, batch: int = 500) -> SweepReport:
    report = SweepReport()
    with uows() as uow:
        org_ids = [row.id for row in uow.orgs.all()]
    for org_id in org_ids:
        with uows() as uow:
            settings = uow.orgs.settings(org_id)
        for channel in Channel:
            period = settings.reauth_period(channel)
            if period is None:
                continue
            report.expired += _drain(uows, services, now, batch, org_id, channel, period, Trigger.EXPIRE)
        report.lapsed += _drain(uows, services, now, batch, org_id, None,
                                timedelta(days=settings.request_lapse_days), Trigger.LAPSE)
    return report


def _drain(uows: UnitOfWorkFactory, services: Services, now: datetime, batch: int, org_id: int,
           channel: Channel | None, age: timedelta, trigger: Trigger) -> int:
    done = 0
    while True:
        with uows() as uow:
            if trigger is Trigger.EXPIRE:
                assert channel is not None
                due = uow.consents.due_for_expiry(org_id, channel, now - age, batch)
                evidence = f"consent older than the {age.days}-day re-authorisation period"
            else:
                due = uow.consents.due_for_lapse(org_id, now - age, batch)
                evidence = f"opt-in request unanswered for {age.days} days"
            for consent in due:
                decide_change(uow, consent, trigger, TransitionContext(actor=SWEEPER, now=now, evidence=evidence),
                              consent.contact_id)
            services.publish(uow, now)
            uow.commit()
        done += len(due)
        if len(due) < batch:
            return done
