"""The webhook outbox in the database: rows of `webhook_deliveries` (see `orm.WebhookDeliveryRow`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, exists, insert, or_, select, update

from ..domain.records import DeliveryStatus, WebhookAttempt, WebhookDelivery
from . import orm
from .records import WEBHOOK_ATTEMPT, WEBHOOK_DELIVERY

PENDING = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)


class WebhookDeliveryRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, org_id: int, enrollment_id: int | None, url: str, payload: str, now: datetime) -> int:
        """Queue one POST of `payload` (JSON text) to `url`, due at once."""
        result = self.conn.execute(insert(orm.webhook_deliveries).values(
            org_id=org_id, enrollment_id=enrollment_id, url=url, payload=payload, status=DeliveryStatus.QUEUED,
            attempts=0, next_attempt_at=now, created_at=now))
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def get(self, delivery_id: int) -> WebhookDelivery | None:
        row = self.conn.execute(select(orm.webhook_deliveries).where(
            orm.webhook_deliveries.c.id == delivery_id)).first()
        return WEBHOOK_DELIVERY(row) if row is not None else None

    def for_enrollment(self, enrollment_id: int) -> list[WebhookDelivery]:
        query = select(orm.webhook_deliveries).where(orm.webhook_deliveries.c.enrollment_id == enrollment_id)
        return [WEBHOOK_DELIVERY(row) for row in self.conn.execute(query.order_by(orm.webhook_deliveries.c.id))]

    def claim_due(self, now: datetime, lease_until: datetime, limit: int,
                  skip_locked: bool) -> list[WebhookDelivery]:
        """Take up to `limit` due rows: queued ones, and ones whose sender's lease ran out (it died
        while posting: at-least-once, receivers de-duplicate on `webhook-id`). Each is marked
        `sending` until `lease_until` with its attempt counted, so no other process takes it."""
        table = orm.webhook_deliveries
        earlier = table.alias("earlier")
        # An event waits while an earlier event of its endpoint for the same contact is not done.
        waits = exists().where(
            earlier.c.endpoint_id == table.c.endpoint_id, earlier.c.ordering_key == table.c.ordering_key,
            earlier.c.status.in_(PENDING), earlier.c.id < table.c.id)
        query = select(table).where(and_(
            table.c.status.in_(PENDING), table.c.next_attempt_at <= now,
            or_(table.c.endpoint_id.is_(None), ~waits),
        )).order_by(table.c.next_attempt_at, table.c.id).limit(limit)
        if skip_locked:
            query = query.with_for_update(skip_locked=True)
        claimed = [dataclasses.replace(delivery, status=DeliveryStatus.SENDING, attempts=delivery.attempts + 1)
                   for delivery in map(WEBHOOK_DELIVERY, self.conn.execute(query).all())]
        for delivery in claimed:
            self.conn.execute(update(table).where(table.c.id == delivery.id).values(
                status=DeliveryStatus.SENDING, attempts=delivery.attempts, next_attempt_at=lease_until))
        return claimed

    def set(self, delivery_id: int, **values: Any) -> None:
        table = orm.webhook_deliveries
        self.conn.execute(update(table).where(table.c.id == delivery_id).values(**values))

    def record_attempt(self, delivery_id: int, attempt: int, at: datetime, status_code: int | None,
                       error: str | None, **values: Any) -> None:
        """Log one POST and set the delivery's outcome, unless the delivery was ended meanwhile
        (its endpoint removed): only a row still `sending` takes the outcome."""
        table = orm.webhook_deliveries
        self.conn.execute(insert(orm.webhook_attempts).values(
            delivery_id=delivery_id, attempt=attempt, attempted_at=at, status_code=status_code, error=error))
        self.conn.execute(update(table).where(table.c.id == delivery_id, table.c.status == DeliveryStatus.SENDING)
                          .values(**values))

    def attempts(self, delivery_ids: Iterable[int]) -> dict[int, list[WebhookAttempt]]:
        """The delivery log of each delivery named: its attempts, oldest first."""
        ids = set(delivery_ids)
        logs: dict[int, list[WebhookAttempt]] = {delivery_id: [] for delivery_id in ids}
        if ids:
            table = orm.webhook_attempts
            query = select(table).where(table.c.delivery_id.in_(ids)).order_by(table.c.id)
            for attempt in map(WEBHOOK_ATTEMPT, self.conn.execute(query)):
                logs[attempt.delivery_id].append(attempt)
        return logs

    def for_endpoint(self, endpoint_id: int, status: DeliveryStatus | None = None, limit: int = 100,
                     before_id: int | None = None) -> list[WebhookDelivery]:
        """The endpoint's deliveries, newest first (`before_id` pages back)."""
        table = orm.webhook_deliveries
        query = select(table).where(table.c.endpoint_id == endpoint_id)
        if status is not None:
            query = query.where(table.c.status == status)
        if before_id is not None:
            query = query.where(table.c.id < before_id)
        return [WEBHOOK_DELIVERY(row) for row in self.conn.execute(query.order_by(table.c.id.desc()).limit(limit))]

    def redeliver(self, delivery: WebhookDelivery, now: datetime, give_up_at: datetime) -> int:
        """Queue the same event (same body, same `webhook-id`) to the same endpoint again, as a
        new delivery with a log of its own; it goes after the contact's events queued before it."""
        result = self.conn.execute(insert(orm.webhook_deliveries).values(
            org_id=delivery.org_id, enrollment_id=None, url=delivery.url, payload=delivery.payload,
            status=DeliveryStatus.QUEUED, attempts=0, next_attempt_at=now, created_at=now,
            endpoint_id=delivery.endpoint_id, event_type=delivery.event_type, event_id=delivery.event_id,
            ordering_key=delivery.ordering_key, give_up_at=give_up_at))
        return int(result.inserted_primary_key[0])  # type: ignore[index]
