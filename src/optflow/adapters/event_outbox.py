"""Consent events out, in the database: the org's event endpoints (`event_endpoints`), and the
delivery rows queued for them (`webhook_deliveries` rows with an `endpoint_id`), one per endpoint
and ledger entry, written as the ledger entries are chained (`LedgerRepository.flush`), so in
the transaction of the change itself."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import DBAPIError

from ..domain.consent_events import DELIVERY_WINDOW, event_for_entry
from ..domain.model import NotFound
from ..domain.records import DeliveryStatus, EventEndpoint
from . import orm
from .prepared import Prepared, Savepoint
from .records import EVENT_ENDPOINT

log = logging.getLogger("optflow.events.out")

# Run at every commit that chained ledger entries: one indexed lookup, usually finding nothing.
_ACTIVE_ENDPOINTS = Prepared(select(orm.event_endpoints.c.id, orm.event_endpoints.c.url,
                                    orm.event_endpoints.c.event_types).where(
    orm.event_endpoints.c.org_id == bindparam("w_org_id"), orm.event_endpoints.c.active.is_(True),
    orm.event_endpoints.c.removed_at.is_(None)).order_by(orm.event_endpoints.c.id))


def queue_events(conn: Connection, org_id: int, entries: Sequence[Mapping[str, Any]]) -> int:
    """Queue, for every active endpoint of the org that wants it, the event of each chained
    ledger entry (in `entries`' order, which is the ledger's). The number of rows queued."""
    endpoints = _ACTIVE_ENDPOINTS.rows(conn, {"w_org_id": org_id})
    if not endpoints:
        return 0
    contact_ids = {entry["contact_id"] for entry in entries if entry["contact_id"] is not None}
    external_ids: dict[int, str | None] = {}
    if contact_ids:
        query = select(orm.contacts.c.id, orm.contacts.c.external_id).where(orm.contacts.c.id.in_(contact_ids))
        external_ids = {contact_id: external_id for contact_id, external_id in conn.execute(query)}
    rows = []
    for entry in entries:
        event = event_for_entry(entry, external_ids.get(entry["contact_id"]))
        if event is None:
            continue
        at = entry["recorded_at"]
        for endpoint in endpoints:
            if event.type in endpoint["event_types"].split(","):
                rows.append({"org_id": org_id, "enrollment_id": None, "url": endpoint["url"], "payload": event.payload,
                             "status": DeliveryStatus.QUEUED, "attempts": 0, "next_attempt_at": at, "created_at": at,
                             "endpoint_id": endpoint["id"], "event_type": event.type, "event_id": event.id,
                             "ordering_key": event.ordering_key, "give_up_at": at + DELIVERY_WINDOW})
    if not rows:
        return 0
    try:
        with Savepoint(conn):
            conn.execute(insert(orm.webhook_deliveries), rows)
    except DBAPIError:  # never let the events stand in the way of the change (an opt-out above all)
        log.exception("could not queue %d consent event deliveries of org %s", len(rows), org_id)
        return 0
    return len(rows)


class EventEndpointRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, org_id: int, url: str, event_types: Iterable[str], description: str, secret_salt: str,
            now: datetime) -> EventEndpoint:
        result = self.conn.execute(insert(orm.event_endpoints).values(
            org_id=org_id, url=url, description=description, event_types=",".join(event_types), active=True,
            secret_salt=secret_salt, created_at=now))
        return self.get(org_id, int(result.inserted_primary_key[0]))  # type: ignore[index]

    def get(self, org_id: int, endpoint_id: int) -> EventEndpoint:
        """The org's endpoint (a removed one too, for its log); NotFound otherwise."""
        table = orm.event_endpoints
        row = self.conn.execute(select(table).where(table.c.id == endpoint_id, table.c.org_id == org_id)).first()
        if row is None:
            raise NotFound(f"no event endpoint {endpoint_id}", code="endpoint_not_found")
        return EVENT_ENDPOINT(row)

    def for_org(self, org_id: int) -> list[EventEndpoint]:
        table = orm.event_endpoints
        query = select(table).where(table.c.org_id == org_id, table.c.removed_at.is_(None)).order_by(table.c.id)
        return [EVENT_ENDPOINT(row) for row in self.conn.execute(query)]

    def set_active(self, endpoint_id: int, active: bool) -> None:
        table = orm.event_endpoints
        self.conn.execute(update(table).where(table.c.id == endpoint_id).values(active=active))

    def set_salt(self, endpoint_id: int, secret_salt: str) -> None:
        table = orm.event_endpoints
        self.conn.execute(update(table).where(table.c.id == endpoint_id).values(secret_salt=secret_salt))

    def remove(self, endpoint_id: int, now: datetime) -> int:
        """Mark the endpoint removed (its log stays) and fail its deliveries not yet made.
        The number of deliveries failed."""
        table, deliveries = orm.event_endpoints, orm.webhook_deliveries
        self.conn.execute(update(table).where(table.c.id == endpoint_id).values(active=False, removed_at=now))
        result = self.conn.execute(update(deliveries).where(
            deliveries.c.endpoint_id == endpoint_id,
            deliveries.c.status.in_((DeliveryStatus.QUEUED, DeliveryStatus.SENDING)),
        ).values(status=DeliveryStatus.FAILED, last_error="the endpoint was removed"))
        return int(result.rowcount)

    def salts(self, endpoint_ids: Iterable[int]) -> dict[int, str]:
        """The secret salt of each endpoint named (removed ones too)."""
        ids = set(endpoint_ids)
        if not ids:
            return {}
        table = orm.event_endpoints
        query = select(table.c.id, table.c.secret_salt).where(table.c.id.in_(ids))
        return {endpoint_id: salt for endpoint_id, salt in self.conn.execute(query)}
