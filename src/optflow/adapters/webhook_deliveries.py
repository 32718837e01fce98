"""The webhook outbox in the database: rows of `webhook_deliveries` (see `orm.WebhookDeliveryRow`)."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from ..domain.records import DeliveryStatus, WebhookDelivery
from . import orm
from .records import WEBHOOK_DELIVERY


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
        query = select(table).where(and_(
            table.c.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.SENDING)), table.c.next_attempt_at <= now,
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
