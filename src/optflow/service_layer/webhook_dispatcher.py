"""Delivering the webhook outbox: the POSTs that flows' `webhook` steps queued.

A step only writes a `webhook_deliveries` row, in the transaction that advances its enrolment, so
a slow or dead receiver never holds a database lock or a web worker. This job (run by the
scheduler beside the message outbox) claims due rows in a short transaction, POSTs each one with
no transaction open, and records the outcome in another short one: `delivered` on a 2xx; on
anything else another attempt after an exponential backoff with jitter (so receivers that failed
together are not retried together), until `failed` after `MAX_ATTEMPTS`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..domain.outbound import PostOutcome
from ..domain.records import DeliveryStatus
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
    doubling: int = 2 ** max(attempts - 1, 0)  # int ** int is typed Any: a negative power is a float
    step = min(base * doubling, RETRY_CAP)
    return step / 2 + step / 2 * jitter


def webhook_id(delivery_id: int) -> str:
    """The `webhook-id` of a delivery: the same on every attempt, so receivers drop repeats."""
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
                uow.commit()
            for row in rows:  # no transaction is open here
                outcome = self.poster.post(row.url, webhook_id(row.id), now, row.payload.encode("utf-8"))
                self._record(row.id, row.attempts, outcome, now, report)
            if len(rows) < batch:
                break
        return report

    def _record(self, delivery_id: int, attempts: int, outcome: PostOutcome, now: datetime,
                report: WebhookDeliveryReport) -> None:
        values: dict[str, object] = {"last_status": outcome.status, "last_error": outcome.error}
        if outcome.delivered:
            values.update(status=DeliveryStatus.DELIVERED, delivered_at=now)
            report.delivered += 1
        elif attempts >= self.max_attempts:
            values.update(status=DeliveryStatus.FAILED,
                          last_error=f"gave up after {attempts} attempts: {outcome.error}")
            report.failed += 1
            log.warning("flow webhook %s failed for good after %d attempts (%s)", delivery_id, attempts,
                        outcome.error)
        else:
            values.update(status=DeliveryStatus.QUEUED,
                          next_attempt_at=now + retry_delay(attempts, self.retry_base, self.jitter()))
            report.retried += 1
        with self.uows() as uow:
            uow.webhook_deliveries.set(delivery_id, **values)
            uow.commit()
