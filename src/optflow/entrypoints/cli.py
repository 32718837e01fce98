"""The `optflow` command line. Each command translates its arguments into a command for the bus
(or an admin call) and prints the outcome; bad input gets one clear line, never a traceback."""

from __future__ import annotations

import functools
import json
import re
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from ..config import Config
from ..domain.model import Actor, ActorKind, Channel, DomainError
from ..service_layer.unit_of_work import UnitOfWork

F = TypeVar("F", bound=Callable[..., Any])

ACTING_AGENT_HELP = ("who is acting: an agent's id or name (`optflow agents list`); the ledger records them and "
                     "their role decides what they may do [env: OPTFLOW_AGENT]")
SERVER_COMMANDS = ("serve", "worker")


def friendly_errors(func: F) -> F:
    """Turn refusals and bad input into one line on stderr and exit status 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from pydantic import ValidationError
        from sqlalchemy.exc import SQLAlchemyError

        from ..adapters.flow_loader import FlowValidationError
        from ..adapters.migrations import SchemaError
        from ..adapters.secrets import SecretError

        try:
            return func(*args, **kwargs)
        except SchemaError as exc:  # e.g. the database is behind this code: the message names the command
            raise click.ClickException(str(exc)) from None
        except DomainError as exc:
            raise click.ClickException(f"{exc} [{exc.code}]") from None
        except SecretError as exc:
            raise click.ClickException(str(exc)) from None
        except FlowValidationError as exc:
            raise click.ClickException("invalid flows:\n" + "\n".join(f"  {e}" for e in exc.errors)) from None
        except ValidationError as exc:
            raise click.ClickException(str(exc)) from None
        except SQLAlchemyError as exc:
            first_line = str(exc).splitlines()[0]
            raise click.ClickException(f"database error: {exc.__class__.__name__}: {first_line}") from None

    return wrapper  # type: ignore[return-value]


def parse_time(value: str | None, name: str = "time") -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO-8601 date-time (e.g. 2027-03-01T09:00:00Z)",
                                 param_hint=name) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def parse_channel(value: str) -> Channel:
    try:
        return Channel(value.lower())
    except ValueError:
        raise click.BadParameter(f"unknown channel {value!r}: use one of {', '.join(ch.value for ch in Channel)}",
                                 param_hint="channel") from None


class Ctx:
    def __init__(self, database: str | None, flows_dir: str | None, log_level: str | None = None) -> None:
        self.database = database
        self.flows_dir = Path(flows_dir) if flows_dir else None
        self.log_level = log_level

    def config(self, **extra: Any) -> Config:
        return Config.from_env(database_url=self.database, flows_dir=self.flows_dir, log_level=self.log_level,
                               **extra)

    @functools.cached_property
    def system(self) -> Any:
        from ..bootstrap import bootstrap

        return bootstrap(self.config())

    def org_id(self, org: int | None) -> int:
        if org is not None:
            return org
        with UnitOfWork(self.system.engine) as uow:
            first = uow.orgs.first_id()
        if first is None:
            raise click.ClickException("no org yet: run `optflow init` first")
        return int(first)

    def acting_agent(self, who: str | None, org_id: int) -> Actor:
        """The person the CLI acts as. The CLI is no anonymous superuser: consent changes carry
        a named agent and their role, as they do through the API."""
        if not who or not who.strip():
            raise click.UsageError("say who is acting: --as AGENT (an id or name from `optflow agents list`), "
                                   "or set OPTFLOW_AGENT")
        with UnitOfWork(self.system.engine) as uow:
            agents = uow.agents.for_org(org_id)
        wanted = who.strip()
        found = [a for a in agents if str(a.id) == wanted] or [a for a in agents if a.name == wanted]
        if len(found) != 1:
            problem = "no agent" if not found else "more than one agent"
            raise click.ClickException(f"{problem} called {wanted!r} in org {org_id}: use an id from "
                                       "`optflow agents list`, or add one with `optflow agents add NAME --role ROLE`")
        return Actor(ActorKind.AGENT, str(found[0].id), found[0].role)

    @contextmanager
    def uow(self) -> Iterator[UnitOfWork]:
        with UnitOfWork(self.system.engine) as uow:
            yield uow


pass_ctx = click.make_pass_decorator(Ctx)


@click.group()
@click.option("--database", envvar="DATABASE_URL", help="SQLAlchemy URL (default: sqlite:///optflow.db).")
@click.option("--flows", "flows_dir", envvar="OPTFLOW_FLOWS_DIR", help="Directory of flow YAML files.")
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
@click.pass_context
def main(ctx: click.Context, database: str | None, flows_dir: str | None, verbose: bool) -> None:
    """optflow: consent and opt-in workflows for conversational messaging."""
    from .logging_setup import configure_logging

    ctx.obj = Ctx(database, flows_dir, log_level="INFO" if verbose else None)
    config = ctx.obj.config()
    # The long-running commands write JSON lines for a log collector; the others, readable lines.
    configure_logging(json=ctx.invoked_subcommand in SERVER_COMMANDS, level=config.log_level,
                      log_bodies=config.log_bodies)


# ------------------------------------------------------------------------------------- setup


@main.command()
@click.option("--org-name", default="Demo organisation", show_default=True)
@click.option("--number", default="+12025550123", show_default=True, help="The org's texting number.")
@pass_ctx
@friendly_errors
def init(obj: Ctx, org_name: str, number: str) -> None:
    """Create the database and, on first run, a default org with an admin token."""
    from ..service_layer.admin import ensure_default_setup

    system = obj.system
    admin = ensure_default_setup(system.engine, system.clock(), org_name, number)
    if admin is None:
        click.echo("already initialised; nothing changed")
        return
    click.echo(f"created org {admin.org_id} ({org_name}) with number {number}")
    click.echo(f"admin API token (shown once): {admin.token}")
    click.echo(f"console sign-in: {admin.email} with password (shown once): {admin.password}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="OPTFLOW_HOST")
@click.option("--port", default=8000, show_default=True, type=int, envvar="OPTFLOW_PORT")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(1, 64), envvar="OPTFLOW_WORKERS")
@click.option("--public-url", envvar="OPTFLOW_PUBLIC_URL",
              help="The URL Twilio calls (behind a proxy it differs from the request URL).")
@click.option("--no-scheduler", is_flag=True, help="Do not run the periodic jobs in this node.")
@click.option("--dev-skip-signatures", is_flag=True,
              help="DEVELOPMENT ONLY: accept webhooks without a valid signature.")
@pass_ctx
@friendly_errors
def serve(obj: Ctx, host: str, port: int, workers: int, public_url: str | None, no_scheduler: bool,
          dev_skip_signatures: bool) -> None:
    """Run the web server (webhooks, API) and, in one managed process, the scheduler."""
    from sanic import Sanic
    from sanic.worker.loader import AppLoader

    from ..adapters import ledger_files
    from ..bootstrap import DEFAULT_ORG_NAME, DEFAULT_ORG_NUMBER
    from ..service_layer.admin import ensure_default_setup
    from .app import create_app
    from .metrics import multiprocess_directory
    from .webhooks import curl_example

    config = obj.config(public_url=public_url or f"http://{host}:{port}",
                        skip_signature_check=dev_skip_signatures or None)
    system = obj.system
    admin = ensure_default_setup(system.engine, system.clock(), DEFAULT_ORG_NAME, DEFAULT_ORG_NUMBER)
    click.echo(f"optflow listening on http://{host}:{port} ({workers} worker{'s' if workers > 1 else ''}, "
               f"database {system.engine.url.render_as_string(hide_password=True)})")
    ledger = ledger_files.attached(system.engine)
    if ledger is not None and ledger.key_file is not None:
        click.echo(f"ledger key file: {ledger.key_file} (keep it secret and backed up: without it the ledger cannot "
                   "be verified)")
    if admin is not None:
        click.echo(f"first run: created org {admin.org_id} with number {DEFAULT_ORG_NUMBER}")
        click.echo(f"admin API token (shown once): {admin.token}")
        click.echo(f"console sign-in: {admin.email} with password (shown once): {admin.password}")
    click.echo(f"console: http://{host}:{port}/console (sign in with an email and password; "
               "set one up with `optflow agents add NAME --email EMAIL`)")
    click.echo("API docs: " + f"http://{host}:{port}/docs")
    click.echo(f"metrics: http://{host}:{port}/metrics")
    if config.skip_signature_check:
        click.echo("WARNING: --dev-skip-signatures: webhook signatures are not checked; development only")
    click.echo("try it:\n" + curl_example(system, config))
    system.close()
    with multiprocess_directory():
        loader = AppLoader(factory=functools.partial(create_app, config, scheduler=not no_scheduler,
                                                     structured_logs=True))
        app = loader.load()
        app.prepare(host=host, port=port, workers=workers, access_log=False, motd=False)
        try:
            Sanic.serve(primary=app, app_loader=loader)
        except (AttributeError, TypeError) as exc:
            if not _sanic_shutdown_race(exc):
                raise
            click.echo("optflow stopped (Sanic's process manager raised while shutting down; the workers had "
                       "finished)", err=True)


def _sanic_shutdown_race(exc: BaseException) -> bool:
    """Sanic 25's process manager can break its own shared state when SIGTERM arrives while it
    is syncing worker states, and then raises from its shutdown code after every worker has
    stopped. Only that exit is wrong, so `serve` treats it as a normal stop."""
    frames = set()
    for error in (exc, exc.__context__):
        if error is not None:
            frames |= {frame.name for frame in traceback.extract_tb(error.__traceback__)}
    return bool(frames & {"_get_process_states", "shutdown_signal"})


@main.command()
@pass_ctx
@friendly_errors
def worker(obj: Ctx) -> None:
    """Run only the periodic jobs (outbox, flows, consent clock), for a node without web traffic."""
    from .scheduler import run_scheduler

    obj.system.close()  # bootstrapping once creates the schema if needed
    run_scheduler(obj.config())


@main.command("run-due")
@click.option("--at", "at", help="The moment to run as (ISO-8601); default now.")
@pass_ctx
@friendly_errors
def run_due_command(obj: Ctx, at: str | None) -> None:
    """Run every periodic job once: consent clock, flows, outbox, flow webhooks, ledger checkpoint."""
    from .scheduler import run_due

    now = parse_time(at, "--at") or obj.system.clock()
    report = run_due(obj.system, now)
    click.echo(f"at {now.isoformat()}:")
    click.echo(f"  consent clock: {report.sweep.expired} expired to reauth_due, {report.sweep.lapsed} requests lapsed")
    click.echo(f"  flows: {report.flows.enrollments} enrolments, {report.flows.steps} steps, "
               f"{report.flows.sent} messages queued, {report.flows.deferred} deferred, "
               f"{report.flows.skipped} skipped, {report.flows.finished} finished")
    click.echo(f"  outbox: {report.outbox.sent} sent, {report.outbox.deferred} deferred, "
               f"{report.outbox.denied} denied, {report.outbox.retried} to retry, {report.outbox.failed} failed")
    click.echo(f"  webhooks: {report.webhooks.delivered} delivered, {report.webhooks.retried} to retry, "
               f"{report.webhooks.failed} failed")
    click.echo(f"  ledger: {report.checkpoints.written} checkpoints written")


@main.command()
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write to a file instead of stdout.")
def diagram(output: str | None) -> None:
    """Print the consent machine as a Mermaid state diagram."""
    from ..domain.machine import mermaid_diagram

    text = mermaid_diagram()
    if output:
        Path(output).write_text(text, encoding="utf-8")
    else:
        click.echo(text, nl=False)


# ------------------------------------------------------------------------------------- database schema


@main.group("db")
def db_group() -> None:
    """The database schema: its revision, and upgrading it to this version of optflow.

    Every other command that uses the database refuses one that is not at this optflow's
    revision (and creates the schema on an empty one)."""


@db_group.command("upgrade")
@pass_ctx
@friendly_errors
def db_upgrade(obj: Ctx) -> None:
    """Upgrade the schema to this optflow's revision, in one transaction (back the database up first).

    A database made by optflow before it had migrations is recognised and upgraded too; an
    empty one gets the whole schema."""
    from ..adapters import db, migrations

    engine = db.make_engine(obj.database)
    try:
        report = migrations.upgrade(engine)
    finally:
        engine.dispose()
    head = ", ".join(report.after)
    if report.before.at_head:
        click.echo(f"already at revision {head} (head); nothing to do")
    elif report.before.empty:
        click.echo(f"created the schema at revision {head} (head)")
    else:
        before = ", ".join(report.before.revisions) or "none (created before optflow had migrations)"
        click.echo(f"upgraded from revision {before} to {head} (head)")


@db_group.command("current")
@pass_ctx
@friendly_errors
def db_current(obj: Ctx) -> None:
    """Print the schema revision of the database and whether it is this optflow's (exit 1 if not)."""
    from ..adapters import db, migrations

    engine = db.make_engine(obj.database)
    try:
        state = migrations.current_state(engine)
    finally:
        engine.dispose()
    click.echo(f"database: {engine.url.render_as_string(hide_password=True)}")
    click.echo(f"revision: {', '.join(state.revisions) or 'none'}"
               + (" (head)" if state.at_head else f" (this optflow's head is {state.head})"))
    if state.empty:
        raise click.ClickException(f"the database has no schema yet: `{migrations.UPGRADE_COMMAND}` or "
                                   "`optflow init` creates it")
    problem = state.problem()
    if problem:
        raise click.ClickException(problem)
    click.echo("up to date")


# ------------------------------------------------------------------------------------- orgs, agents


@main.group()
def orgs() -> None:
    """Organisations and their settings."""


@orgs.command("add")
@click.argument("name")
@click.option("--parent", type=int, help="Parent org id (settings are inherited).")
@click.option("--number", "numbers", multiple=True, help="A texting number of the org (repeatable).")
@click.option("--settings", "settings_json", help="Settings as JSON.")
@pass_ctx
@friendly_errors
def orgs_add(obj: Ctx, name: str, parent: int | None, numbers: tuple[str, ...], settings_json: str | None) -> None:
    from ..service_layer.admin import create_org

    settings = _json_arg(settings_json, "--settings")
    with obj.uow() as uow:
        org_id = create_org(uow, name, obj.system.clock(), parent, settings, numbers)
        uow.commit()
    click.echo(f"created org {org_id}")


@orgs.command("add-number")
@click.argument("number")
@click.option("--org", type=int)
@pass_ctx
@friendly_errors
def orgs_add_number(obj: Ctx, number: str, org: int | None) -> None:
    """Add a texting number to an org: inbound messages to it belong to that org."""
    from ..service_layer.admin import add_number

    org_id = obj.org_id(org)
    with obj.uow() as uow:
        value = add_number(uow, org_id, number)
        uow.commit()
    click.echo(f"org {org_id} now answers {value}")


@orgs.command("show")
@click.option("--org", type=int)
@pass_ctx
@friendly_errors
def orgs_show(obj: Ctx, org: int | None) -> None:
    org_id = obj.org_id(org)
    with obj.uow() as uow:
        row = uow.orgs.get(org_id)
        settings = uow.orgs.settings(org_id)
        numbers = uow.orgs.numbers(org_id)
    click.echo(json.dumps({"id": org_id, "name": row.name, "parent_id": row.parent_id, "numbers": numbers,
                           "settings": settings.model_dump(mode="json", exclude={"twilio_auth_token", "chat_secret",
                                                                                 "unsubscribe_secret"})}, indent=2))


@orgs.command("set")
@click.argument("settings_json")
@click.option("--org", type=int)
@pass_ctx
@friendly_errors
def orgs_set(obj: Ctx, settings_json: str, org: int | None) -> None:
    """Change settings: a JSON object of the keys to change."""
    from ..service_layer.admin import update_settings

    changes = _json_arg(settings_json, "SETTINGS_JSON") or {}
    org_id = obj.org_id(org)
    with obj.uow() as uow:
        update_settings(uow, obj.system.services.renderer, org_id, changes)
        uow.commit()
    click.echo(f"updated settings of org {org_id}: {', '.join(sorted(changes)) or 'nothing'}")


def _json_arg(text: str | None, name: str) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON: {exc}", param_hint=name) from None
    if not isinstance(value, dict):
        raise click.BadParameter("must be a JSON object", param_hint=name)
    return value


@main.group()
def agents() -> None:
    """Agents, supervisors and admins, and their API tokens."""


_DURATION = re.compile(r"([0-9]{1,6})([mhdw])")
_DURATION_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: str, name: str) -> timedelta:
    """`90d`, `12h`, `30m`, `2w`."""
    match = _DURATION.fullmatch(value.strip().lower())
    if not match or int(match.group(1)) == 0:
        raise click.BadParameter(f"{value!r} is not a duration like 90d, 12h, 30m or 2w", param_hint=name)
    return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})


EMAIL_HELP = "Let the person sign in to the console with this email (and a password)."
PASSWORD_STDIN_HELP = "Read the console password from the first line of stdin (default: generate one and print it)."


def _console_password(password_stdin: bool) -> tuple[str, bool]:
    """(password, generated): the first line of stdin, or a new random one."""
    import secrets
    import sys

    if password_stdin:
        return sys.stdin.readline().rstrip("\r\n"), False
    return secrets.token_urlsafe(12), True


@agents.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["agent", "supervisor", "admin"]), default="agent", show_default=True)
@click.option("--org", type=int)
@click.option("--expires-in", help="The token stops working after this long: 90d, 12h, 30m, 2w (default: never).")
@click.option("--email", help=EMAIL_HELP)
@click.option("--password-stdin", is_flag=True, help=PASSWORD_STDIN_HELP)
@pass_ctx
@friendly_errors
def agents_add(obj: Ctx, name: str, role: str, org: int | None, expires_in: str | None, email: str | None,
               password_stdin: bool) -> None:
    """Create an agent and print its API token (shown once); with --email, a console sign-in too."""
    from ..service_layer.admin import add_agent
    from ..service_layer.console_auth import set_sign_in

    if password_stdin and not email:
        raise click.UsageError("--password-stdin needs --email (the console sign-in it is for)")
    lifetime = parse_duration(expires_in, "--expires-in") if expires_in else None
    org_id = obj.org_id(org)
    now = obj.system.clock()
    password, generated = _console_password(password_stdin) if email else ("", False)
    with obj.uow() as uow:
        agent = add_agent(uow, org_id, name, role, now, now + lifetime if lifetime else None)
        person = set_sign_in(uow, org_id, agent.id, email, password) if email else None
        uow.commit()
    click.echo(f"created {role} {agent.name} (id {agent.id}) in org {org_id}")
    if lifetime:
        click.echo(f"the token expires at {_when(now + lifetime)}")
    click.echo(f"API token (shown once): {agent.token}")
    if person is not None:
        shown = f" with password (shown once): {password}" if generated else " with the password given"
        click.echo(f"console sign-in: {person.email}{shown}")


@agents.command("password")
@click.argument("agent_id", type=int)
@click.option("--email", required=True, help=EMAIL_HELP)
@click.option("--password-stdin", is_flag=True, help=PASSWORD_STDIN_HELP)
@click.option("--org", type=int)
@pass_ctx
@friendly_errors
def agents_password(obj: Ctx, agent_id: int, email: str, password_stdin: bool, org: int | None) -> None:
    """Set (or reset) an agent's console sign-in; signs them out of every session."""
    from ..service_layer.console_auth import set_sign_in

    org_id = obj.org_id(org)
    password, generated = _console_password(password_stdin)
    with obj.uow() as uow:
        person = set_sign_in(uow, org_id, agent_id, email, password)
        uow.commit()
    shown = f" with password (shown once): {password}" if generated else " with the password given"
    click.echo(f"console sign-in of agent {agent_id}: {person.email}{shown}")


def _when(value: datetime | None, never: str = "-") -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%MZ") if value is not None else never


@agents.command("list")
@click.option("--org", type=int)
@pass_ctx
@friendly_errors
def agents_list(obj: Ctx, org: int | None) -> None:
    """The org's agents and the state of their API tokens (never the tokens themselves)."""
    from ..service_layer.admin import TokenRefused, check_token

    org_id = obj.org_id(org)  # before the transaction: SQLite allows one writer at a time
    now = obj.system.clock()
    with obj.uow() as uow:
        rows = uow.agents.for_org(org_id)
    click.echo(f"{'id':>5}  {'role':<10}  {'created':<17}  {'last used':<17}  {'expires':<17}  {'status':<8}  name")
    for row in rows:
        try:
            check_token(row, now)
            status = "active"
        except TokenRefused as exc:
            status = exc.code.removeprefix("token_")
        click.echo(f"{row.id:>5}  {row.role:<10}  {_when(row.created_at):<17}  "
                   f"{_when(row.last_used_at, 'never'):<17}  {_when(row.expires_at, 'never'):<17}  "
                   f"{status:<8}  {row.name}")


@agents.command("revoke")
@click.argument("agent_id", type=int)
@click.option("--org", type=int)
@pass_ctx
@friendly_errors
def agents_revoke(obj: Ctx, agent_id: int, org: int | None) -> None:
    """Revoke an agent's API token for good."""
    from ..service_layer.admin import revoke_agent

    org_id = obj.org_id(org)
    with obj.uow() as uow:
        row = revoke_agent(uow, org_id, agent_id, obj.system.clock())
        uow.commit()
    click.echo(f"revoked the token of {row.name} (id {agent_id}) at {_when(row.revoked_at)}")


@agents.command("expire")
@click.argument("agent_id", type=int)
@click.option("--in", "expires_in", help="Expire after this long from now: 90d, 12h, 30m, 2w.")
@click.option("--at", "at", help="Expire at this moment (ISO-8601; a past one expires it now).")
@click.option("--never", is_flag=True, help="Never expire.")
@click.option("--org", type=int)
@pass_ctx
@friendly_errors
def agents_expire(obj: Ctx, agent_id: int, expires_in: str | None, at: str | None, never: bool,
                  org: int | None) -> None:
    """Set when an agent's API token stops working."""
    from ..service_layer.admin import set_agent_expiry

    if sum(choice is not None and choice is not False for choice in (expires_in, at, never)) != 1:
        raise click.UsageError("give exactly one of --in, --at and --never")
    now = obj.system.clock()
    expires_at = None if never else parse_time(at, "--at") if at else now + parse_duration(expires_in or "", "--in")
    org_id = obj.org_id(org)
    with obj.uow() as uow:
        row = set_agent_expiry(uow, org_id, agent_id, expires_at)
        uow.commit()
    click.echo(f"the token of {row.name} (id {agent_id}) expires: {_when(row.expires_at, 'never')}")


from .cli_contacts import register as _register_contacts  # noqa: E402
from .cli_flows import register as _register_flows  # noqa: E402

_register_contacts(main)
_register_flows(main)


if __name__ == "__main__":  # pragma: no cover
    main(prog_name="optflow")

