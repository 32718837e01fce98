"""Admins' side of consent events out: registering event endpoints, reading their delivery log,
and redelivering an event. The events themselves are queued as the ledger is written
(`adapters.event_outbox.queue_events`) and delivered by the `WebhookDispatcher`."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from ..domain.consent_events import DELIVERY_WINDOW, EVENT_TYPES
from ..domain.model import InvalidInput, NotFound, TransitionRefused
from ..domain.records import DeliveryStatus, EventEndpoint, WebhookAttempt, WebhookDelivery
from ..domain.text import storable
from .unit_of_work import UnitOfWork

MAX_URL_CHARS = 2000
MAX_DESCRIPTION_CHARS = 200
MAX_LISTED = 500


@dataclass(frozen=True)
class DeliveryLog:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


def check_endpoint(url: str, event_types: Sequence[str], description: str = "") -> tuple[str, tuple[str, ...]]:
    """The URL and event types of a new endpoint, checked (InvalidInput naming what is wrong);
    the types in their canonical order, each once. A description is any text (made storable)."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise InvalidInput(f"the url is longer than {MAX_URL_CHARS} characters", code="invalid_url")
    if any(ch.isspace() or ord(ch) < 32 for ch in url) or storable(url) != url:
        raise InvalidInput("the url holds spaces, control characters or invalid text", code="invalid_url")
    try:
        parts = urlsplit(url)
        scheme, host = parts.scheme, parts.hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        scheme, host = "", None
    if scheme not in ("http", "https") or not host:
        raise InvalidInput(f"the url must be an http:// or https:// address with a host, not {url[:100]!r}",
                           code="invalid_url")
    if not event_types:
        raise InvalidInput(f"say which events the endpoint receives: {', '.join(EVENT_TYPES)}",
                           code="invalid_event_types")
    unknown = [kind for kind in event_types if kind not in EVENT_TYPES]
    if unknown:
        raise InvalidInput(f"unknown event type(s) {', '.join(map(repr, unknown))}; known: {', '.join(EVENT_TYPES)}",
                           code="invalid_event_types")
    if len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidInput(f"the description is longer than {MAX_DESCRIPTION_CHARS} characters",
                           code="invalid_description")
    return url, tuple(kind for kind in EVENT_TYPES if kind in event_types)


def add_endpoint(uow: UnitOfWork, org_id: int, url: str, event_types: Sequence[str], now: datetime,
                 description: str = "") -> EventEndpoint:
    """Register an endpoint; it receives the events of changes committed from now on. Its
    secret is derived from a fresh random salt (see `WebhookPoster.endpoint_secret`)."""
    url, types = check_endpoint(url, event_types, description)
    return uow.event_endpoints.add(org_id, url, types, storable(description), secrets.token_hex(16), now)


def set_active(uow: UnitOfWork, org_id: int, endpoint_id: int, active: bool) -> EventEndpoint:
    """Pause (no events are queued for it while inactive) or resume an endpoint."""
    endpoint = live_endpoint(uow, org_id, endpoint_id)
    uow.event_endpoints.set_active(endpoint.id, active)
    return uow.event_endpoints.get(org_id, endpoint_id)


def rotate_secret(uow: UnitOfWork, org_id: int, endpoint_id: int) -> EventEndpoint:
    """Give the endpoint a new secret (a new salt): every later attempt is signed with it."""
    endpoint = live_endpoint(uow, org_id, endpoint_id)
    uow.event_endpoints.set_salt(endpoint.id, secrets.token_hex(16))
    return uow.event_endpoints.get(org_id, endpoint_id)


def remove_endpoint(uow: UnitOfWork, org_id: int, endpoint_id: int, now: datetime) -> int:
    """Remove the endpoint: nothing more is queued or sent to it; its deliveries not yet made
    are marked failed (the number returned); its delivery log stays readable."""
    endpoint = live_endpoint(uow, org_id, endpoint_id)
    return uow.event_endpoints.remove(endpoint.id, now)


def live_endpoint(uow: UnitOfWork, org_id: int, endpoint_id: int) -> EventEndpoint:
    endpoint = uow.event_endpoints.get(org_id, endpoint_id)
    if endpoint.removed_at is not None:
        raise NotFound(f"event endpoint {endpoint_id} was removed", code="endpoint_not_found")
    return endpoint


def delivery_log(uow: UnitOfWork, org_id: int, endpoint_id: int, status: DeliveryStatus | None = None,
                 limit: int = 100, before_id: int | None = None) -> list[DeliveryLog]:
    """The endpoint's deliveries, newest first, each with its attempts (a removed endpoint's too)."""
    endpoint = uow.event_endpoints.get(org_id, endpoint_id)
    rows = uow.webhook_deliveries.for_endpoint(endpoint.id, status, min(limit, MAX_LISTED), before_id)
    attempts = uow.webhook_deliveries.attempts(row.id for row in rows)
    return [DeliveryLog(row, attempts[row.id]) for row in rows]


def redeliver(uow: UnitOfWork, org_id: int, delivery_id: int, now: datetime) -> DeliveryLog:
    """Send a delivered or failed event again: a new delivery of the same event (same body and
    `webhook-id`) to the same endpoint, tried for a day like a new event."""
    delivery = uow.webhook_deliveries.get(delivery_id)
    if delivery is None or delivery.org_id != org_id or delivery.endpoint_id is None:
        raise NotFound(f"no event delivery {delivery_id}", code="delivery_not_found")
    live_endpoint(uow, org_id, delivery.endpoint_id)
    if delivery.status not in (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED):
        raise TransitionRefused(f"delivery {delivery_id} is still {delivery.status.value}: it will be tried "
                                "again by itself", code="delivery_pending")
    new_id = uow.webhook_deliveries.redeliver(delivery, now, now + DELIVERY_WINDOW)
    new = uow.webhook_deliveries.get(new_id)
    assert new is not None
    return DeliveryLog(new, [])
