"""Delivering the webhook outbox: the POSTs that flows' `webhook` steps queued, and the consent
events queued for the org's event endpoints.

A step or a consent change only writes a `webhook_deliveries` row, in its own transaction, so a
slow or dead receiver never holds a database lock or a web worker. This job (run by the
scheduler beside the message outbox) claims due rows in a short transaction, POSTs each one with
no transaction open, and records the outcome and the attempt's log row in another short one:
`delivered` on a 2xx; on anything else another attempt after an exponential backoff with jitter
(so receivers that failed together are not retried together), until `failed`: a flow's webhook
after `MAX_ATTEMPTS`, a consent event once its day (`give_up_at`) is over. Consent events to one
endpoint go in order per contact: the claim skips an event while an earlier one of the same
contact and endpoint is still queued or being sent.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..domain.outbound import PostOutcome
from ..domain.records import DeliveryStatus, WebhookDelivery
from .ports import WebhookPoster
from .unit_of_work import UnitOfWorkFactory

log = logging.getLogger("optflow.webhooks.out")

LEASE = timedelta(minutes=5)  # a row being posted is not taken again before this (the poster's timeout is far less)
MAX_ATTEMPTS = 8
RETRY_BASE = timedelta(seconds=10)
RETRY_CAP = timedelta(hours=1)


def retry_delay(attempts: int, base: timedelta, jitter: float) -> timedelta:
    """The wait before the next attempt, after `attempts` failed ones: `base` doubled per failed
    attempt up to `RETRY_CAP`, of which the second half is scaled by `jitter` (0 <= jitter < 1),
    so it is never shorter than half the exponential step."""
    # int ** int is typed Any (a negative power is a float); past 2**30 any base is over the cap,
    # and a day of an event's retries would otherwise overflow timedelta.
    doubling: int = 2 ** min(max(attempts - 1, 0), 30)
    step = min(base * doubling, RETRY_CAP)
    return step / 2 + step / 2 * jitter


def webhook_id(delivery_id: int) -> str:
    """The `webhook-id` of a flow webhook's delivery: the same on every attempt, so receivers drop
    repeats. (A consent event's is its `event_id`, made from its ledger entry.)"""
    return f"optflow-flow-webhook-{delivery_id}"


@dataclass
class WebhookDeliveryReport:
    delivered: int = 0
    retried: int = 0
    failed: int = 0

    @property
    def handled(self) -> int:
        return self.delivered + self.retried + self.failed


class WebhookDispatcher:
    def __init__(self, uows: UnitOfWorkFactory, poster: WebhookPoster, *, retry_base: timedelta = RETRY_BASE,
                 max_attempts: int = MAX_ATTEMPTS, jitter: Callable[[], float] = random.random) -> None:
        self.uows = uows
        self.poster = poster
        self.retry_base = retry_base
        self.max_attempts = max_attempts
        self.jitter = jitter

    def run(self, now: datetime, batch: int = 50, max_batches: int = 20) -> WebhookDeliveryReport:
        """Deliver every webhook due at `now`, `batch` claimed at a time."""
        report = WebhookDeliveryReport()
        for _ in range(max_batches):
            with self.uows() as uow:
                rows = uow.webhook_deliveries.claim_due(now, now + LEASE, batch, uow.skip_locked)
                salts = uow.event_endpoints.salts(row.endpoint_id for row in rows if row.endpoint_id is not None)
                uow.commit()
            for row in rows:  # no transaction is open here
                salt = salts.get(row.endpoint_id) if row.endpoint_id is not None else None
                outcome = self.poster.post(row.url, row.event_id or webhook_id(row.id), now,
                                           row.payload.encode("utf-8"), secret_salt=salt)
                self._record(row, outcome, now, report)
            if not rows:  # a short batch is no sign of the end: an event delivered frees its contact's next
                break
        return report

    def _gives_up(self, row: WebhookDelivery, now: datetime) -> bool:
        """After a failed attempt: whether it was the last (an event's day is over; a flow's
        webhook has had its `max_attempts`)."""
        if row.give_up_at is not None:
            return now >= row.give_up_at
        return row.attempts >= self.max_attempts

    def _record(self, row: WebhookDelivery, outcome: PostOutcome, now: datetime,
                report: WebhookDeliveryReport) -> None:
        attempts = row.attempts
        values: dict[str, object] = {"last_status": outcome.status, "last_error": outcome.error}
        retry_at = now + retry_delay(attempts, self.retry_base, self.jitter())
        if outcome.delivered:
            values.update(status=DeliveryStatus.DELIVERED, delivered_at=now)
            report.delivered += 1
        elif self._gives_up(row, now):
            values.update(status=DeliveryStatus.FAILED,
                          last_error=f"gave up after {attempts} attempts: {outcome.error}")
            report.failed += 1
            log.warning("webhook delivery %s failed for good after %d attempts (%s)", row.id, attempts,
                        outcome.error)
        else:
            # An event's last attempt is at the end of its day, however the backoff falls.
            values.update(status=DeliveryStatus.QUEUED, next_attempt_at=retry_at if row.give_up_at is None
                          else min(retry_at, row.give_up_at))
            report.retried += 1
        with self.uows() as uow:
            uow.webhook_deliveries.record_attempt(row.id, attempts, now, outcome.status, outcome.error, **values)
            uow.commit()
