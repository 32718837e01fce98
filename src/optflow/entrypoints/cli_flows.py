"""`optflow flows ...`: validate flow files, list them, and manage a contact's enrolments."""

from __future__ import annotations

import csv
from pathlib import Path

import click

from ..domain import commands as c
from ..domain.model import DomainError
from .cli import ACTING_AGENT_HELP, Ctx, friendly_errors, pass_ctx


def register(main: click.Group) -> None:
    @main.group()
    def flows() -> None:
        """Drip flows: validate, list, enrol, remove."""

    @flows.command("validate")
    @click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
    def validate(path: Path | None) -> None:
        """Check every flow file under PATH (default ./flows); exit 1 on any error."""
        from ..adapters.flow_loader import validate_path
        from ..service_layer.flow_engine import known_templates

        target = path or Path("flows")
        if not target.exists():
            raise click.ClickException(f"{target} does not exist")
        flows_dir = target if target.is_dir() else target.parent
        errors = validate_path(target, known_templates(flows_dir))
        for error in errors:
            click.echo(str(error), err=True)
        if errors:
            raise click.ClickException(f"{len(errors)} error{'s' if len(errors) != 1 else ''} in {target}")
        click.echo(f"{target}: all flows are valid")

    @flows.command("list")
    @pass_ctx
    @friendly_errors
    def list_flows(obj: Ctx) -> None:
        for flow in sorted(obj.system.flows.flows.values(), key=lambda fl: fl.name):
            trigger = f"{flow.trigger.kind.value}:{flow.trigger.name or ''}"
            click.echo(f"{flow.name:<28} {flow.version}  {trigger:<36} {flow.source_file}")

    @flows.command("enrollments")
    @click.argument("contact_id", type=int)
    @click.option("--org", type=int)
    @click.option("--all", "show_all", is_flag=True, help="Also ended enrolments.")
    @pass_ctx
    @friendly_errors
    def enrollments(obj: Ctx, contact_id: int, org: int | None, show_all: bool) -> None:
        """A contact's enrolments."""
        statuses = ("active", "paused", "done", "cancelled") if show_all else ("active", "paused")
        org_id = obj.org_id(org)  # before the unit of work: on SQLite a second transaction would wait for it
        with obj.uow() as uow:
            uow.contacts.get(org_id, contact_id)
            rows = uow.enrollments.for_contact(contact_id, statuses)
        if not rows:
            click.echo("no enrolments")
        for row in rows:
            due = row["next_run_at"].isoformat() if row["next_run_at"] else "-"
            click.echo(f"{row['id']:>6}  {row['flow_name']:<28} {row['status']:<9} step {row['pc']:<3} "
                       f"next {due}  {row['end_reason'] or ''}")

    @flows.command("enroll")
    @click.argument("contact_id", type=int)
    @click.argument("flow_name")
    @click.option("--org", type=int)
    @click.option("--as", "acting", envvar="OPTFLOW_AGENT", help=ACTING_AGENT_HELP)
    @pass_ctx
    @friendly_errors
    def enroll(obj: Ctx, contact_id: int, flow_name: str, org: int | None, acting: str | None) -> None:
        """Enrol a contact in a flow by hand."""
        system = obj.system
        org_id = obj.org_id(org)
        actor = obj.acting_agent(acting, org_id)
        enrollment_id = system.bus.handle(c.EnrollContact(org_id, contact_id, flow_name, actor))
        click.echo(f"enrolled contact {contact_id} in {flow_name} (enrolment {enrollment_id})")

    @flows.command("enroll-csv")
    @click.argument("flow_name")
    @click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--org", type=int)
    @click.option("--as", "acting", envvar="OPTFLOW_AGENT", help=ACTING_AGENT_HELP)
    @pass_ctx
    @friendly_errors
    def enroll_csv(obj: Ctx, flow_name: str, csv_file: Path, org: int | None, acting: str | None) -> None:
        """Enrol the contacts of a CSV file (a column `contact_id`, `phone` or `email`) in a flow.

        Each row is its own transaction; rows that cannot be enrolled are reported with the reason."""
        from .cli_contacts import resolve_contact

        system = obj.system
        org_id = obj.org_id(org)
        actor = obj.acting_agent(acting, org_id)
        if flow_name not in system.flows.flows:
            raise click.ClickException(f"no flow named {flow_name!r}")
        with csv_file.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
        enrolled, rejected = 0, []
        for line, raw in enumerate(rows, start=2):
            row = {(k or "").strip().lower(): (v or "").strip() for k, v in raw.items()}
            key = row.get("contact_id") or row.get("phone") or row.get("email") or ""
            try:
                if not key:
                    raise DomainError("no contact_id, phone or email", code="no_contact")
                contact_id = resolve_contact(obj, org_id, key)
                system.bus.handle(c.EnrollContact(org_id, contact_id, flow_name, actor))
                enrolled += 1
            except DomainError as exc:
                rejected.append(f"  line {line}: {exc}")
        click.echo(f"enrolled {enrolled} contact{'s' if enrolled != 1 else ''} in {flow_name}, "
                   f"rejected {len(rejected)}")
        for message in rejected:
            click.echo(message)

    @flows.command("remove")
    @click.argument("contact_id", type=int)
    @click.argument("enrollment_id", type=int)
    @click.option("--org", type=int)
    @click.option("--as", "acting", envvar="OPTFLOW_AGENT", help=ACTING_AGENT_HELP)
    @pass_ctx
    @friendly_errors
    def remove(obj: Ctx, contact_id: int, enrollment_id: int, org: int | None, acting: str | None) -> None:
        """Take a contact out of one enrolment."""
        system = obj.system
        org_id = obj.org_id(org)
        actor = obj.acting_agent(acting, org_id)
        system.bus.handle(c.RemoveEnrollment(org_id, contact_id, enrollment_id, actor))
        click.echo(f"removed enrolment {enrollment_id}")
