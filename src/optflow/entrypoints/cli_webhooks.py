"""`optflow webhooks ...`: the org's consent event endpoints (CRM/DMS sync), their delivery log,
and redelivery. The same operations as /api/v1/event-endpoints (docs/integrations.md)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import click

from ..domain.consent_events import EVENT_TYPES
from ..domain.records import DeliveryStatus, EventEndpoint
from .cli import Ctx, friendly_errors, pass_ctx


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value is not None else "-"


def _event_types(value: str) -> list[str]:
    types = [part.strip() for part in value.split(",") if part.strip()]
    if not types:
        raise click.BadParameter(f"name one or more of {', '.join(EVENT_TYPES)}, separated by commas",
                                 param_hint="--events")
    return types


def _show(endpoint: EventEndpoint) -> str:
    state = "active" if endpoint.active else "paused"
    return f"{endpoint.id:>5}  {state:<7}  {','.join(endpoint.types):<50}  {endpoint.url}" + (
        f"  ({endpoint.description})" if endpoint.description else "")


def register(main: click.Group) -> None:
    @main.group()
    def webhooks() -> None:
        """Consent events out: endpoints that receive every consent, DND and marketing change."""

    @webhooks.command("add")
    @click.argument("url")
    @click.option("--events", "events", default=",".join(EVENT_TYPES), show_default=True,
                  help="Comma-separated event types it receives.")
    @click.option("--description", default="", help="What it is, e.g. the CRM's name.")
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def add(obj: Ctx, url: str, events: str, description: str, org: int | None) -> None:
        """Register an endpoint at URL and print its signing secret."""
        from ..service_layer.event_endpoints import add_endpoint

        org_id = obj.org_id(org)
        with obj.uow() as uow:
            endpoint = add_endpoint(uow, org_id, url, _event_types(events), obj.system.clock(), description)
            uow.commit()
        click.echo(f"registered endpoint {endpoint.id} in org {org_id}: {endpoint.url} ({', '.join(endpoint.types)})")
        secret = obj.system.webhooks.poster.endpoint_secret(endpoint.secret_salt)
        click.echo(f"signing secret (Standard Webhooks): {secret}")

    @webhooks.command("list")
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def list_endpoints(obj: Ctx, org: int | None) -> None:
        """The org's endpoints."""
        org_id = obj.org_id(org)
        with obj.uow() as uow:
            rows = uow.event_endpoints.for_org(org_id)
        click.echo(f"{'id':>5}  {'state':<7}  {'events':<50}  url")
        for row in rows:
            click.echo(_show(row))

    @webhooks.command("secret")
    @click.argument("endpoint_id", type=int)
    @click.option("--rotate", is_flag=True, help="Give the endpoint a new secret first.")
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def secret(obj: Ctx, endpoint_id: int, rotate: bool, org: int | None) -> None:
        """Print an endpoint's signing secret (with --rotate: a new one)."""
        from ..service_layer.event_endpoints import live_endpoint, rotate_secret

        org_id = obj.org_id(org)
        with obj.uow() as uow:
            endpoint = rotate_secret(uow, org_id, endpoint_id) if rotate else live_endpoint(uow, org_id, endpoint_id)
            uow.commit()
        click.echo(obj.system.webhooks.poster.endpoint_secret(endpoint.secret_salt))

    @webhooks.command("pause")
    @click.argument("endpoint_id", type=int)
    @click.option("--resume", is_flag=True, help="Resume it instead.")
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def pause(obj: Ctx, endpoint_id: int, resume: bool, org: int | None) -> None:
        """Pause an endpoint (no events are queued for it until resumed), or --resume it."""
        from ..service_layer.event_endpoints import set_active

        org_id = obj.org_id(org)
        with obj.uow() as uow:
            endpoint = set_active(uow, org_id, endpoint_id, resume)
            uow.commit()
        click.echo(_show(endpoint))

    @webhooks.command("remove")
    @click.argument("endpoint_id", type=int)
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def remove(obj: Ctx, endpoint_id: int, org: int | None) -> None:
        """Remove an endpoint; its deliveries not yet made are marked failed."""
        from ..service_layer.event_endpoints import remove_endpoint

        org_id = obj.org_id(org)
        with obj.uow() as uow:
            failed = remove_endpoint(uow, org_id, endpoint_id, obj.system.clock())
            uow.commit()
        click.echo(f"removed endpoint {endpoint_id}; {failed} delivery(ies) not yet made marked failed")

    @webhooks.command("deliveries")
    @click.argument("endpoint_id", type=int)
    @click.option("--status", type=click.Choice([s.value for s in DeliveryStatus]), help="Only these.")
    @click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
    @click.option("--payload", is_flag=True, help="Print each event's body too.")
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def deliveries(obj: Ctx, endpoint_id: int, status: str | None, limit: int, payload: bool,
                   org: int | None) -> None:
        """An endpoint's delivery log, newest first: each event and its attempts."""
        from ..service_layer.event_endpoints import delivery_log

        org_id = obj.org_id(org)
        with obj.uow() as uow:
            logs = delivery_log(uow, org_id, endpoint_id, DeliveryStatus(status) if status else None, limit)
        for log in logs:
            row = log.delivery
            next_try = f", next try {_when(row.next_attempt_at)}" if row.status is DeliveryStatus.QUEUED else ""
            click.echo(f"delivery {row.id}  {row.event_type}  {row.event_id}  {row.status.value}{next_try}")
            for attempt in log.attempts:
                outcome = str(attempt.status_code) if attempt.status_code is not None else "no answer"
                error = f"  {attempt.error}" if attempt.error and attempt.error != f"HTTP {attempt.status_code}" else ""
                click.echo(f"    attempt {attempt.attempt}  {_when(attempt.attempted_at)}  {outcome}{error}")
            if payload:
                click.echo("    " + json.dumps(json.loads(row.payload), ensure_ascii=False))

    @webhooks.command("redeliver")
    @click.argument("delivery_id", type=int)
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def redeliver(obj: Ctx, delivery_id: int, org: int | None) -> None:
        """Queue a delivered or failed event again (same body and webhook-id) to its endpoint."""
        from ..service_layer.event_endpoints import redeliver as redeliver_event

        org_id = obj.org_id(org)
        with obj.uow() as uow:
            log = redeliver_event(uow, org_id, delivery_id, obj.system.clock())
            uow.commit()
        click.echo(f"queued delivery {log.delivery.id} of event {log.delivery.event_id} "
                   f"(tried until {_when(log.delivery.give_up_at)})")
