"""`optflow flows ...`: validate flow files, list them, and manage a contact's enrolments."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from ..domain import commands as c
from ..domain.model import InvalidInput
from ..domain.records import ENDED, RUNNING
from .cli import ACTING_AGENT_HELP, Ctx, friendly_errors, parse_time, pass_ctx
from .cli_contacts import resolve_contact
from .cli_csv import FileRefused, check_rejects_path, default_rejects_path, process_rows, read_csv

ENROL_COLUMNS = ("contact_id", "phone", "email")


def _one_contact(obj: Ctx, org_id: int, row: dict[str, str]) -> int:
    """The contact a row names by id, phone or email; all that are given must name the same one."""
    given = {column: row[column] for column in ENROL_COLUMNS if row.get(column)}
    if not given:
        raise InvalidInput("no contact_id, phone or email", code="no_contact")
    found = {column: resolve_contact(obj, org_id, value) for column, value in given.items()}
    if len(set(found.values())) > 1:
        raise InvalidInput("the columns name different contacts: "
                           + ", ".join(f"{column} {given[column]} is contact {found[column]}" for column in found),
                           code="ambiguous_contact")
    return found.popitem()[1]


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def register(main: click.Group) -> None:
    @main.group()
    def flows() -> None:
        """Drip flows: validate, list, enrol, remove."""

    @flows.command("validate")
    @click.argument("path", required=False, type=click.Path(exists=True, path_type=Path))
    def validate(path: Path | None) -> None:
        """Check every flow file under PATH (default ./flows); exit 1 on any error."""
        from ..adapters.flow_loader import FlowDirectory, validate_path

        target = path or Path("flows")
        if not target.exists():
            raise click.ClickException(f"{target} does not exist")
        flows_dir = target if target.is_dir() else target.parent
        errors = validate_path(target, FlowDirectory(flows_dir).known_templates())
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

    @flows.command("dry-run")
    @click.argument("flow_name")
    @click.argument("contact_id", type=int)
    @click.option("--org", type=int)
    @click.option("--at", "at", help="Start the run at this moment (ISO-8601); default now.")
    @click.option("--data", help="The event the contact is enrolled with, as a JSON object (what event.* reads).")
    @pass_ctx
    @friendly_errors
    def dry_run_command(obj: Ctx, flow_name: str, contact_id: int, org: int | None, at: str | None,
                        data: str | None) -> None:
        """Show every message FLOW_NAME would send the contact, when, and the policy's answer,
        without writing anything."""
        from ..service_layer.flow_dry_run import dry_run, event_data

        system = obj.system
        org_id = obj.org_id(org)
        now = parse_time(at, "--at") or system.clock()
        run = dry_run(system.bus.uow, system.flows, org_id, contact_id, flow_name, now, event_data(data))
        click.echo(f"Dry run of {run.flow} (version {run.version}) for contact {contact_id} from "
                   f"{_when(run.started_at)}; nothing is written or sent.")
        if run.enrolment_refused:
            click.echo(f"Note: {run.enrolment_refused}.")
        for step in run.steps:
            click.echo(f"{_when(step.at)}  {step.step} ({step.action}): {step.outcome}")
            for message in step.messages:
                reason = f": {message.reason}" if message.reason else ""
                click.echo(f"    {message.channel.value} to {message.address} at {_when(message.send_at)}, "
                           f"{message.answer.value}{reason}")
                text = (f"Subject: {message.subject}\n" if message.subject else "") + message.text
                for line in text.splitlines():
                    click.echo(f"      | {line}")
        sent = sum(1 for _, m in run.messages if m.answer.value in ("allow", "defer"))
        click.echo(f"End: {run.end}. {sent} message{'s' if sent != 1 else ''} would be sent, "
                   f"{len(run.messages) - sent} not.")

    @flows.command("enrollments")
    @click.argument("contact_id", type=int)
    @click.option("--org", type=int)
    @click.option("--all", "show_all", is_flag=True, help="Also ended enrolments.")
    @pass_ctx
    @friendly_errors
    def enrollments(obj: Ctx, contact_id: int, org: int | None, show_all: bool) -> None:
        """A contact's enrolments."""
        statuses = (*RUNNING, *ENDED) if show_all else RUNNING
        org_id = obj.org_id(org)  # before the unit of work: on SQLite a second transaction would wait for it
        with obj.uow() as uow:
            uow.contacts.get(org_id, contact_id)
            rows = uow.enrollments.for_contact(contact_id, statuses)
        if not rows:
            click.echo("no enrolments")
        for row in rows:
            due = row.next_run_at.isoformat() if row.next_run_at else "-"
            click.echo(f"{row.id:>6}  {row.flow_name:<28} {row.status:<9} step {row.pc:<3} "
                       f"next {due}  {row.end_reason or ''}")

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
    @click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path),
                  help="Where rejected rows go, with their reason (default: FILE.rejects.csv beside FILE).")
    @click.option("--as", "acting", envvar="OPTFLOW_AGENT", help=ACTING_AGENT_HELP)
    @pass_ctx
    @friendly_errors
    def enroll_csv(obj: Ctx, flow_name: str, csv_file: Path, org: int | None, rejects: Path | None,
                   acting: str | None) -> None:
        """Enrol the contacts of a UTF-8 CSV file (columns contact_id, phone, email: at least one;
        no others) in a flow.

        Each row is its own transaction; rows that cannot be enrolled are rejected with the reason
        (listed and written to the rejects file). A contact already in the flow (an active or
        paused enrolment) is skipped, so running the same file again enrols nobody twice. Exit
        status: 0 every row enrolled or skipped, 1 some rows rejected, 2 the file refused."""
        system = obj.system
        if flow_name not in system.flows.flows:
            raise FileRefused(None, f"no flow named {flow_name!r}")
        rejects = rejects or default_rejects_path(csv_file)
        check_rejects_path(csv_file, rejects)
        source = read_csv(csv_file, ENROL_COLUMNS, needs_one_of=ENROL_COLUMNS)
        org_id = obj.org_id(org)
        actor = obj.acting_agent(acting, org_id)

        def enrol_row(row: dict[str, str]) -> str | None:
            contact_id = _one_contact(obj, org_id, row)
            with obj.uow() as uow:
                if uow.enrollments.any_for(contact_id, flow_name, RUNNING):
                    return f"contact {contact_id} is already in {flow_name}"
            system.bus.handle(c.EnrollContact(org_id, contact_id, flow_name, actor))
            return None

        process_rows(source, enrol_row, rejects, lambda done, skipped, rejected: (
            f"enrolled {done} contact{'s' if done != 1 else ''} in {flow_name}, skipped {skipped} already in it, "
            f"rejected {rejected}"))

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
