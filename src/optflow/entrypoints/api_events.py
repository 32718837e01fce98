"""Consent events out, for admins: /api/v1/event-endpoints/... (register, list, pause, remove,
rotate the secret, read the delivery log, redeliver)."""

from __future__ import annotations

import json

from sanic import Blueprint, Request
from sanic.response import HTTPResponse
from sanic_ext.extensions.openapi import openapi

from ..domain.records import DeliveryStatus, EventEndpoint
from ..service_layer import event_endpoints as endpoints
from .api_common import (
    caller_of,
    id_param,
    path_id,
    query_int,
    query_param,
    query_value,
    read_body,
    respond,
    route,
    system_of,
)
from .errors import ApiError
from .schemas import (
    EventDeliveryListOut,
    EventDeliveryOut,
    EventEndpointIn,
    EventEndpointListOut,
    EventEndpointOut,
    EventEndpointPatch,
    EventEndpointRemovedOut,
    EventEndpointSecretOut,
    WebhookAttemptOut,
)

TAG = "event endpoints"
ENDPOINT_ID = id_param("endpoint_id", "The event endpoint.")


def endpoint_out(row: EventEndpoint) -> EventEndpointOut:
    return EventEndpointOut(id=row.id, url=row.url, description=row.description, event_types=list(row.types),
                            active=row.active, created_at=row.created_at)


def delivery_out(log: endpoints.DeliveryLog) -> EventDeliveryOut:
    row = log.delivery
    assert row.endpoint_id is not None and row.event_id is not None and row.event_type is not None
    return EventDeliveryOut(
        id=row.id, endpoint_id=row.endpoint_id, event_id=row.event_id, event_type=row.event_type,
        status=row.status.value,  # type: ignore[arg-type]  # a DeliveryStatus is one of the Literal's texts
        attempts=[WebhookAttemptOut(attempt=a.attempt, attempted_at=a.attempted_at, status_code=a.status_code,
                                    error=a.error) for a in log.attempts],
        next_attempt_at=row.next_attempt_at if row.status is DeliveryStatus.QUEUED else None,
        give_up_at=row.give_up_at, last_status=row.last_status, last_error=row.last_error,
        created_at=row.created_at, delivered_at=row.delivered_at, payload=json.loads(row.payload))


def register(bp: Blueprint) -> None:
    def with_secret(request: Request, row: EventEndpoint) -> EventEndpointSecretOut:
        secret = system_of(request).webhooks.poster.endpoint_secret(row.secret_salt)
        return EventEndpointSecretOut(**endpoint_out(row).model_dump(), secret=secret)

    @bp.post("/event-endpoints")
    @route("admin", body=EventEndpointIn, ok=(201, EventEndpointSecretOut, "Registered; its secret."), tag=TAG)
    async def add_endpoint(request: Request) -> HTTPResponse:
        """Register an event endpoint.

        From now on every consent change, DND change and marketing-permission change of the org
        (each ledger entry) of the types chosen is POSTed to `url`, signed the Standard Webhooks way
        with the endpoint's `secret` (shown here, and by `GET .../secret`), retried for a day, in
        order per contact. See docs/integrations.md.
        """
        body = read_body(request, EventEndpointIn)
        system = system_of(request)
        with system.bus.uow() as uow:
            row = endpoints.add_endpoint(uow, caller_of(request).org_id, body.url, body.event_types,
                                         system.clock(), body.description)
            uow.commit()
        return respond(with_secret(request, row), 201)

    @bp.get("/event-endpoints")
    @route("admin", ok=(200, EventEndpointListOut, "The org's event endpoints."), tag=TAG)
    async def list_endpoints(request: Request) -> HTTPResponse:
        """The org's event endpoints (not removed ones)."""
        with system_of(request).bus.uow(read_only=True) as uow:
            rows = uow.event_endpoints.for_org(caller_of(request).org_id)
        return respond(EventEndpointListOut(endpoints=[endpoint_out(row) for row in rows]))

    @bp.get("/event-endpoints/<endpoint_id:int>/secret")
    @route("admin", ok=(200, EventEndpointSecretOut, "The endpoint and its secret."), errors=(404,),
           params=(ENDPOINT_ID,), tag=TAG)
    async def endpoint_secret(request: Request, endpoint_id: int) -> HTTPResponse:
        """An event endpoint's signing secret."""
        path_id(endpoint_id, "endpoint")
        with system_of(request).bus.uow(read_only=True) as uow:
            row = endpoints.live_endpoint(uow, caller_of(request).org_id, endpoint_id)
        return respond(with_secret(request, row))

    @bp.post("/event-endpoints/<endpoint_id:int>/rotate-secret")
    @route("admin", ok=(200, EventEndpointSecretOut, "The endpoint and its new secret."), errors=(404,),
           params=(ENDPOINT_ID,), tag=TAG)
    async def rotate_secret(request: Request, endpoint_id: int) -> HTTPResponse:
        """Give an event endpoint a new secret.

        Every attempt from now on, retries included, is signed with the new one.
        """
        path_id(endpoint_id, "endpoint")
        with system_of(request).bus.uow() as uow:
            row = endpoints.rotate_secret(uow, caller_of(request).org_id, endpoint_id)
            uow.commit()
        return respond(with_secret(request, row))

    @bp.patch("/event-endpoints/<endpoint_id:int>")
    @route("admin", body=EventEndpointPatch, ok=(200, EventEndpointOut, "The endpoint after the change."),
           errors=(404,), params=(ENDPOINT_ID,), tag=TAG)
    async def patch_endpoint(request: Request, endpoint_id: int) -> HTTPResponse:
        """Pause or resume an event endpoint.

        While inactive no events are queued for it (those already queued still go).
        """
        path_id(endpoint_id, "endpoint")
        body = read_body(request, EventEndpointPatch)
        with system_of(request).bus.uow() as uow:
            row = endpoints.set_active(uow, caller_of(request).org_id, endpoint_id, body.active)
            uow.commit()
        return respond(endpoint_out(row))

    @bp.delete("/event-endpoints/<endpoint_id:int>")
    @route("admin", ok=(200, EventEndpointRemovedOut, "Removed."), errors=(404,), params=(ENDPOINT_ID,), tag=TAG)
    async def remove_endpoint(request: Request, endpoint_id: int) -> HTTPResponse:
        """Remove an event endpoint.

        Nothing more is sent to it; its deliveries not yet made are marked failed. Its delivery
        log stays readable.
        """
        path_id(endpoint_id, "endpoint")
        system = system_of(request)
        with system.bus.uow() as uow:
            failed = endpoints.remove_endpoint(uow, caller_of(request).org_id, endpoint_id, system.clock())
            uow.commit()
        return respond(EventEndpointRemovedOut(id=endpoint_id, failed_deliveries=failed))

    @bp.get("/event-endpoints/<endpoint_id:int>/deliveries")
    @route("admin", ok=(200, EventDeliveryListOut, "Deliveries, newest first, each with its attempts."),
           errors=(400, 404, 422), tag=TAG, params=(
               ENDPOINT_ID,
               query_param("status", openapi.String(enum=[s.value for s in DeliveryStatus]), "Only these."),
               query_param("limit", openapi.Integer(minimum=1, maximum=endpoints.MAX_LISTED, default=100),
                           "At most this many."),
               query_param("before", openapi.Long(minimum=1), "Only deliveries with a smaller id (the next page)."),
           ))
    async def list_deliveries(request: Request, endpoint_id: int) -> HTTPResponse:
        """An event endpoint's delivery log.

        Each event queued for it, with every attempt: when, the receiver's HTTP status or the
        error, and the delivery's state (`queued` with its next attempt, `sending`, `delivered`,
        `failed` once its day of retries is over).
        """
        path_id(endpoint_id, "endpoint")
        raw_status = query_value(request, "status")
        try:
            status = DeliveryStatus(raw_status) if raw_status is not None else None
        except ValueError:
            raise ApiError(422, "invalid_input", f"status must be one of {', '.join(DeliveryStatus)}, "
                                                 f"not {raw_status!r}") from None
        limit = query_int(request, "limit", 100, 1, endpoints.MAX_LISTED)
        before = query_int(request, "before", 0, 0, 2**63 - 1) or None
        with system_of(request).bus.uow(read_only=True) as uow:
            logs = endpoints.delivery_log(uow, caller_of(request).org_id, endpoint_id, status, limit, before)
        return respond(EventDeliveryListOut(deliveries=[delivery_out(log) for log in logs]))

    @bp.post("/event-deliveries/<delivery_id:int>/redeliver")
    @route("admin", ok=(202, EventDeliveryOut, "Queued again, as a new delivery of the same event."),
           errors=(404, 409), params=(id_param("delivery_id", "The delivered or failed delivery."),), tag=TAG)
    async def redeliver(request: Request, delivery_id: int) -> HTTPResponse:
        """Send an event again.

        A delivered or failed event is queued again to the same endpoint: same body, same
        `webhook-id`, tried for a day. A delivery still queued or being sent is refused with 409
        `delivery_pending`.
        """
        path_id(delivery_id, "delivery")
        system = system_of(request)
        with system.bus.uow() as uow:
            log = endpoints.redeliver(uow, caller_of(request).org_id, delivery_id, system.clock())
            uow.commit()
        return respond(delivery_out(log), 202)
