"""`optflow contacts|consent|ledger|simulate`: the agent actions from a terminal."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from ..domain import commands as c
from ..domain.addresses import normalize_for_channel
from ..domain.model import Actor, ActorKind, Channel, DomainError, InvalidInput
from ..domain.records import Audience
from .cli import ACTING_AGENT_HELP, Ctx, friendly_errors, parse_channel, parse_time, pass_ctx
from .cli_csv import check_rejects_path, default_rejects_path, process_rows, read_csv


def _contact_json(obj: Ctx, org_id: int, contact_id: int) -> dict[str, Any]:
    with obj.uow() as uow:
        contact = uow.contacts.get(org_id, contact_id)
        addresses = uow.contacts.addresses(contact_id)
        consents = uow.consents.for_addresses(org_id, [a.value for a in addresses])
    return {
        "id": contact_id, "external_id": contact.external_id, "name": contact.name, "time_zone": contact.time_zone,
        "region": contact.region, "language": contact.language,
        "active": contact.active, "do_not_call": contact.do_not_call, "marketing_allowed": contact.marketing_allowed,
        "dnd": {"all": contact.dnd_all, "channels": [ch for ch in contact.dnd_channels.split(",") if ch]},
        "addresses": [{"kind": a.kind, "value": a.value, **a.phone_flags()} for a in addresses],
        "consents": [{"channel": k.channel.value, "address": k.address, "state": k.state.value,
                      "awaiting_pin": k.awaiting_pin,
                      "opted_in_at": k.opted_in_at.isoformat() if k.opted_in_at else None,
                      "method": k.method, "do_not_contact": k.do_not_contact} for k in consents],
    }


def _ledger_lines(rows: list[dict[str, Any]]) -> list[str]:
    lines = []
    for row in rows:
        actor = row["actor_kind"] + (f":{row['actor_id']}" if row["actor_id"] else "")
        when = row["occurred_at"].isoformat(timespec="seconds")
        recorded = row["recorded_at"].isoformat(timespec="seconds")
        lines.append(
            f"#{row['seq']:<4} {when}  {row['channel']:<8} {row['address'] or '-':<18} "
            f"{row['from_state']} -> {row['to_state']}  ({row['trigger']}"
            f"{', ' + row['method'] if row['method'] else ''}) by {actor}"
            + (f"  recorded {recorded}" if recorded != when else "")
            + (f"  evidence: {row['evidence']}" if row["evidence"] else "")
        )
    return lines


def register(main: click.Group) -> None:
    @main.group()
    def contacts() -> None:
        """Contacts: add, show, import."""

    @contacts.command("add")
    @click.option("--name", default="")
    @click.option("--phone", "phones", multiple=True)
    @click.option("--email", "emails", multiple=True)
    @click.option("--time-zone")
    @click.option("--region", help="US state code, for state quiet-hour rules.")
    @click.option("--no-marketing", is_flag=True, help="The contact declined marketing.")
    @click.option("--language", help="en, es, fr or pt: the language the contact is answered in.")
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def contacts_add(obj: Ctx, name: str, phones: tuple[str, ...], emails: tuple[str, ...], time_zone: str | None,
                     region: str | None, no_marketing: bool, language: str | None, org: int | None) -> None:
        if not phones and not emails:
            raise click.UsageError("give at least one --phone or --email")
        result = obj.system.bus.handle(c.CreateContact(obj.org_id(org), name=name, phones=phones, emails=emails,
                                                       time_zone=time_zone, region=region,
                                                       marketing_allowed=not no_marketing, language=language))
        click.echo(f"created contact {result.contact_id}")

    @contacts.command("set-language")
    @click.argument("contact")
    @click.argument("language")
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def contacts_set_language(obj: Ctx, contact: str, language: str, org: int | None) -> None:
        """Answer CONTACT (an id, a phone number or an email address) in LANGUAGE (en, es, fr or
        pt; `none` to forget it) when their own message does not say."""
        org_id = obj.org_id(org)
        contact_id = resolve_contact(obj, org_id, contact)
        code = "" if language.strip().lower() == "none" else language.strip().lower()
        obj.system.bus.handle(c.UpdateContact(org_id, contact_id, language=code))
        click.echo(f"contact {contact_id}: language {code or 'not set'}")

    @contacts.command("show")
    @click.argument("contact")
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def contacts_show(obj: Ctx, contact: str, org: int | None) -> None:
        """CONTACT is an id, a phone number or an email address."""
        org_id = obj.org_id(org)
        click.echo(json.dumps(_contact_json(obj, org_id, resolve_contact(obj, org_id, contact)), indent=2))

    @contacts.command("import")
    @click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("--org", type=int)
    @click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path),
                  help="Where rejected rows go, with their reason (default: FILE.rejects.csv beside FILE).")
    @pass_ctx
    @friendly_errors
    def contacts_import(obj: Ctx, csv_file: Path, org: int | None, rejects: Path | None) -> None:
        """Import contacts from a UTF-8 CSV file with the columns name, phone, email (more phones or
        emails separated by ';'), time_zone, region and marketing (yes/no); a phone or an email
        column is needed, any other column refuses the whole file before anything is written.

        Each row is its own transaction: a bad row is rejected with its reason (listed and written
        to the rejects file), the others are kept. A row whose addresses all belong to one
        contact already is skipped, so running the same file again adds nothing twice. Exit
        status: 0 every row imported or skipped, 1 some rows rejected, 2 the file refused."""
        rejects = rejects or default_rejects_path(csv_file)
        check_rejects_path(csv_file, rejects)
        source = read_csv(csv_file, CONTACT_COLUMNS, needs_one_of=("phone", "email"))
        org_id = obj.org_id(org)

        def import_row(row: dict[str, str]) -> str | None:
            phones = _split_addresses(row.get("phone", ""))
            emails = _split_addresses(row.get("email", ""))
            if not phones and not emails:
                raise InvalidInput("no phone or email", code="no_address")
            addresses = ([normalize_for_channel(p, Channel.TEXT) for p in phones]
                         + [normalize_for_channel(e, Channel.EMAIL) for e in emails])
            with obj.system.uows(read_only=True) as uow:
                owners = {uow.contacts.find_by_address(org_id, address) for address in addresses}
            if len(owners) == 1 and None not in owners:
                return f"already present as contact {owners.pop()}"
            obj.system.bus.handle(c.CreateContact(  # refuses an address of another contact
                org_id, name=row.get("name", ""), phones=phones, emails=emails,
                time_zone=row.get("time_zone") or None, region=row.get("region") or None,
                marketing_allowed=_yes_or_no(row.get("marketing", ""), "marketing", default=True)))
            return None

        process_rows(source, import_row, rejects, lambda done, skipped, rejected: (
            f"imported {done} contact{'s' if done != 1 else ''}, skipped {skipped} already present, "
            f"rejected {rejected}"))

    @main.command("consent")
    @click.argument("action", type=click.Choice([
        "request", "quick", "record", "confirm-pin", "reauthorize", "text-reauth", "opt-out", "reset",
        "dnd-on", "dnd-off", "marketing-on", "marketing-off"]))
    @click.argument("contact")
    @click.option("--channel", default="text", show_default=True)
    @click.option("--all-channels", is_flag=True, help="opt-out / dnd: every channel.")
    @click.option("--method", help="record / reauthorize / opt-out: how the customer consented or opted out.")
    @click.option("--at", "at", help="record / reauthorize / opt-out: when the customer consented or opted out "
                                     "(ISO-8601; default now).")
    @click.option("--evidence", help="record / reauthorize / opt-out: free text kept in the ledger.")
    @click.option("--pin", help="confirm-pin: the code the customer read out.")
    @click.option("--org", type=int)
    @click.option("--as", "acting", envvar="OPTFLOW_AGENT", help=ACTING_AGENT_HELP)
    @pass_ctx
    @friendly_errors
    def consent(obj: Ctx, action: str, contact: str, channel: str, all_channels: bool, method: str | None,
                at: str | None, evidence: str | None, pin: str | None, org: int | None, acting: str | None) -> None:
        """Agent actions on a contact (id, phone or email), as a named agent (--as).

        Only a supervisor may reset a consent (with --evidence saying why) or record a consent over
        the customer's opt-out (with --evidence and an --at later than the opt-out)."""
        org_id = obj.org_id(org)
        actor = obj.acting_agent(acting, org_id)
        contact_id = resolve_contact(obj, org_id, contact)
        ch = parse_channel(channel)
        when = parse_time(at, "--at")
        command: c.Command
        if action in ("request", "quick"):
            command = c.RequestOptIn(org_id, contact_id, ch, actor, quick=action == "quick")
        elif action == "record":
            command = c.RecordOptIn(org_id, contact_id, ch, actor, method=method or "", occurred_at=when,
                                    evidence=evidence)
        elif action == "confirm-pin":
            command = c.ConfirmPin(org_id, contact_id, ch, actor, pin=pin or "")
        elif action == "reauthorize":
            command = c.Reauthorize(org_id, contact_id, ch, actor, method=method or "verbal", occurred_at=when,
                                    evidence=evidence)
        elif action == "text-reauth":
            command = c.SendReauthRequest(org_id, contact_id, ch, actor)
        elif action == "opt-out":
            command = c.OptOut(org_id, contact_id, ch, actor, all_channels=all_channels,
                               method=_opt_out_method(method), evidence=evidence, occurred_at=when)
        elif action == "reset":
            command = c.ResetConsent(org_id, contact_id, ch, actor, evidence=evidence)
        elif action in ("dnd-on", "dnd-off"):
            command = c.SetDnd(org_id, contact_id, actor, on=action == "dnd-on",
                               channels=() if all_channels else (ch,), all_channels=all_channels)
        else:
            command = c.SetMarketing(org_id, contact_id, actor, allowed=action == "marketing-on")
        result = obj.system.bus.handle(command)
        state = f", {result.channel.value} is now {result.state.value}" if result.state and result.channel else ""
        click.echo(f"contact {contact_id}: {result.status}{state}" + (f" ({result.detail})" if result.detail else ""))

    @main.group()
    def ledger() -> None:
        """The consent ledger: show, verify, checkpoint, rotate-key."""

    @ledger.command("show")
    @click.argument("contact", required=False)
    @click.option("--org", type=int)
    @pass_ctx
    @friendly_errors
    def ledger_show(obj: Ctx, contact: str | None, org: int | None) -> None:
        """Entries of one contact (id, phone or email), or of the whole org."""
        org_id = obj.org_id(org)
        contact_id = resolve_contact(obj, org_id, contact) if contact else None  # one transaction at a time
        with obj.uow() as uow:
            if contact_id is not None:
                addresses = [a.value for a in uow.contacts.addresses(contact_id)]
                rows = uow.ledger.for_contact(org_id, contact_id, addresses)
            else:
                rows = uow.ledger.entries(org_id)
        for line in _ledger_lines(rows) or ["no entries"]:
            click.echo(line)

    @ledger.command("verify")
    @click.option("--org", type=int, help="One org (default: every org).")
    @pass_ctx
    @friendly_errors
    def ledger_verify(obj: Ctx, org: int | None) -> None:
        """Check each org's chain with the ledger keys, against its head row and the checkpoints:
        report edited, reordered or deleted entries, a missing or rolled-back head, a cut or
        deleted chain, and damage found while writing. Exit 1 if anything is wrong."""
        from ..service_layer.ledger_audit import verify_ledger

        result = verify_ledger(obj.system.uows, org)
        for problem in result.problems:
            click.echo(f"TAMPERED: {problem}", err=True)
        for report in result.reports:
            unkeyed = f", {report.unkeyed} unkeyed (written before ledger keys)" if report.unkeyed else ""
            click.echo(f"org {report.org_id}: {report.entries} entries{unkeyed}, {report.checkpoints} checkpoints")
        click.echo(f"keys: {result.files.key_file or 'in memory'}; "
                   f"checkpoints: {result.files.checkpoint_file or 'none (in-memory database)'}")
        if result.problems:
            raise click.ClickException(f"the ledger fails verification: {len(result.problems)} problem(s)")
        click.echo("ledger intact")

    @ledger.command("checkpoint")
    @click.option("--export", is_flag=True, help="Print every checkpoint recorded so far instead (JSON lines).")
    @pass_ctx
    @friendly_errors
    def ledger_checkpoint(obj: Ctx, export: bool) -> None:
        """Sign the current end of every org's chain into the checkpoint file (outside the
        database), so that cutting a chain back later shows in `verify`. The scheduler does this
        every few minutes. Keep exported copies elsewhere too."""
        from ..service_layer.ledger_audit import export_checkpoints, write_checkpoints

        if export:
            for line in export_checkpoints(obj.system.uows):
                click.echo(line)
            return
        run = write_checkpoints(obj.system.uows, obj.system.clock())
        click.echo(f"{run.written} checkpoint(s) written to {run.path or 'nowhere (in-memory database)'}")
        if run.behind:
            raise click.ClickException("the chain of org(s) " + ", ".join(map(str, run.behind))
                                       + " ends before its last checkpoint: run `optflow ledger verify`")

    @ledger.command("rotate-key")
    @pass_ctx
    @friendly_errors
    def ledger_rotate_key(obj: Ctx) -> None:
        """Add a new ledger key to the key file. It signs once each optflow process restarts;
        the older keys stay in the file to verify what they signed."""
        from ..adapters.ledger_files import add_key

        files = obj.system.uows.ledger_files()
        assert files is not None  # bootstrapped
        key = add_key(files)
        click.echo(f"added ledger key {key.key_id} to {files.key_file}: restart optflow's processes to sign with "
                   "it, and back the file up again")

    @main.command()
    @click.option("--channel", default="text", show_default=True)
    @click.option("--pin", "pin_required", is_flag=True, help="The org asks for a PIN after YES.")
    @click.option("--mode", type=click.Choice(["consent", "disclaimer", "auto"]), default="consent", show_default=True)
    def simulate(channel: str, pin_required: bool, mode: str) -> None:
        """A terminal conversation on a throwaway in-memory database: type as the customer and
        see the replies, the employee's notifications and the consent state after each message."""
        run_simulation(parse_channel(channel), pin_required, mode)


CONTACT_COLUMNS = ("name", "phone", "email", "time_zone", "region", "marketing")
YES, NO = ("yes", "y", "true", "1"), ("no", "n", "false", "0")


def _opt_out_method(method: str | None) -> str:
    """How the customer opted out, as the opt-out form names it; `agent` when not said."""
    if method is None:
        return "agent"
    if not method.strip() or len(method) > 64:
        raise click.BadParameter("say how the customer opted out, in 1 to 64 characters", param_hint="--method")
    return method.strip()


def _split_addresses(field: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in field.split(";") if part.strip())


def _yes_or_no(text: str, column: str, *, default: bool) -> bool:
    if not text:
        return default
    if text.lower() in YES:
        return True
    if text.lower() in NO:
        return False
    raise InvalidInput(f"{column} must be yes or no, not {text!r}")


def resolve_contact(obj: Ctx, org_id: int, text: str) -> int:
    if text.isdigit():
        return int(text)
    from ..domain.addresses import normalize

    _, value = normalize(text)
    with obj.uow() as uow:
        contact_id = uow.contacts.find_by_address(org_id, value)
    if contact_id is None:
        raise DomainError(f"no contact has the address {value}", code="contact_not_found")
    return contact_id


SIMULATE_HELP = """Type what the customer texts (YES, HELP, STOP, START, anything). Commands:
  /request        the agent sends an opt-in request
  /send TEXT      the agent writes to the customer
  /pin CODE       the agent confirms the PIN the customer read out
  /optout         the agent opts the customer out
  /ledger         show the ledger so far
  /quit           leave"""


def run_simulation(channel: Channel, pin_required: bool, mode: str) -> None:
    from ..adapters.senders import ConsoleSender
    from ..bootstrap import bootstrap
    from ..config import Config
    from ..service_layer.admin import add_agent, create_org

    customer_number, org_number = "+14155552671", "+12025550123"
    sink = io.StringIO()
    system = bootstrap(Config(database_url="sqlite://"), sender=ConsoleSender(sink))
    now = datetime.now(UTC)
    with system.bus.uow() as uow:
        org_id = create_org(uow, "Acme Motors", now, numbers=(org_number,),
                            settings={"pin_required": pin_required, "modes": {channel.value: mode},
                                      "program_name": "Acme Motors service", "quiet_hours": False})
        agent = add_agent(uow, org_id, "Dana", "agent", now)
        uow.commit()
    address = "sam@example.com" if channel is Channel.EMAIL else customer_number
    contact_id = system.bus.handle(c.CreateContact(
        org_id, name="Sam", phones=(customer_number,), emails=("sam@example.com",))).contact_id
    actor = Actor(ActorKind.AGENT, str(agent.id))
    seen_employee: set[int] = set()
    click.echo(f"Simulating a {channel.value} conversation in {mode} mode between Sam ({address}) and "
               f"Dana at Acme Motors{' with a PIN step' if pin_required else ''}.")
    click.echo(SIMULATE_HELP)

    def show_state() -> None:
        with system.bus.uow() as uow:
            consent = uow.consents.get(org_id, address, channel)
        extra = " (awaiting PIN)" if consent.awaiting_pin else ""
        click.echo(click.style(f"  [state: {channel.value} {consent.state.value}{extra}]", fg="cyan"))

    def show_outbound() -> None:
        system.dispatcher.run(datetime.now(UTC))
        for line in sink.getvalue().splitlines():
            click.echo(click.style(f"  to Sam: {line}", fg="green"))
        sink.seek(0)
        sink.truncate()
        with system.bus.uow() as uow:
            rows = uow.messages.for_contact(org_id, contact_id, limit=50)
        for row in reversed(rows):
            if row.audience is Audience.EMPLOYEE and row.id not in seen_employee:
                seen_employee.add(row.id)
                click.echo(click.style(f"  to Dana: {row.body}", fg="yellow"))

    sid = 0
    stdin = sys.stdin
    interactive = stdin.isatty()
    while True:
        if interactive:
            click.echo("Sam> ", nl=False)
        line = stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        if not interactive:
            click.echo(f"Sam> {text}")
        try:
            if text.startswith("/"):
                verb, _, rest = text[1:].partition(" ")
                if verb == "quit":
                    break
                if verb == "help":
                    click.echo(SIMULATE_HELP)
                    continue
                if verb == "ledger":
                    with system.bus.uow() as uow:
                        rows = uow.ledger.for_contact(org_id, contact_id, [customer_number, "sam@example.com"])
                    for entry in _ledger_lines(rows):
                        click.echo("  " + entry)
                    continue
                command: c.Command
                if verb == "request":
                    command = c.RequestOptIn(org_id, contact_id, channel, actor)
                elif verb == "send":
                    command = c.SendMessage(org_id, contact_id, channel, rest, actor)
                elif verb == "pin":
                    command = c.ConfirmPin(org_id, contact_id, channel, actor, pin=rest)
                elif verb == "optout":
                    command = c.OptOut(org_id, contact_id, channel, actor)
                else:
                    click.echo(f"  unknown command /{verb}; /help lists them")
                    continue
                result = system.bus.handle(command)
                click.echo(f"  (Dana: {result.status}{' - ' + result.detail if result.detail else ''})")
            else:
                sid += 1
                result = system.bus.handle(c.ReceiveInbound(channel, address, org_number, text, f"SIM{sid}",
                                                            org_id=org_id))
                click.echo(click.style(f"  [understood as: {result.intent.value}]", fg="magenta"))
                for reply in result.replies:
                    click.echo(click.style(f"  to Sam: {reply}", fg="green"))
        except DomainError as exc:
            click.echo(click.style(f"  refused: {exc}", fg="red"))
        show_outbound()
        show_state()
    with system.bus.uow() as uow:
        rows = uow.ledger.for_contact(org_id, contact_id, [customer_number, "sam@example.com"])
    click.echo("Ledger:")
    for entry in _ledger_lines(rows) or ["no entries"]:
        click.echo("  " + entry)
    system.close()
