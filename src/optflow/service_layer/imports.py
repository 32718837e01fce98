"""CRM changes in and bulk imports: the upsert by external id, imported consents and opt-outs,
the suppression list, and the API's import jobs.

A bulk import is a CSV file whose rows become commands (`ImportConsent`, `AddSuppression`),
handled in batches of `BATCH_ROWS`: one transaction per batch, a savepoint per row (the bus's
`handle_batch`), so a bad row is rejected alone and a file of a million rows is never one giant
transaction. Every row is idempotent (a consent on record since the date given, an address
already suppressed, are left alone), so a file imported twice, or a run that stopped half-way
and is started again, records nothing twice.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from ..domain import commands as c
from ..domain import consent_rules as rules
from ..domain.addresses import looks_like_email, normalize_for_channel
from ..domain.machine import TransitionContext
from ..domain.model import Actor, ActorKind, Channel, DomainError, InvalidInput, TransitionRefused
from ..domain.text import storable
from .admin import INTEGRATION_ROLE
from .handlers import (
    Services,
    _add_addresses,
    _check_region,
    _check_zone,
    cancel_outbound,
    create_contact,
    record_marketing,
    release_held,
    revoke,
    write_outcome,
)
from .messagebus import MessageBus
from .unit_of_work import UnitOfWork

log = logging.getLogger("optflow.imports")

BATCH_ROWS = 500  # rows per transaction
JOB_LEASE = timedelta(minutes=5)  # a job's worker renews it after every batch

CONSENT_COLUMNS = ("external_id", "name", "phone", "email", "channel", "state", "method", "occurred_at",
                   "evidence", "source")
CONSENT_REQUIRED = ("channel", "state", "occurred_at")
SUPPRESSION_COLUMNS = ("phone", "email", "channel", "reason")
SUPPRESSION_REQUIRED = ("reason",)
COLUMNS = {"consents": (CONSENT_COLUMNS, CONSENT_REQUIRED), "suppressions": (SUPPRESSION_COLUMNS, SUPPRESSION_REQUIRED)}
ADDRESS_COLUMNS = ("phone", "email")  # a file needs one of them
REJECTS_COLUMNS = ("rejected_line", "rejected_reason")

OPTED_IN_WORDS = frozenset({"opted_in", "opt_in", "opt-in", "in", "yes", "subscribed"})
OPTED_OUT_WORDS = frozenset({"opted_out", "opt_out", "opt-out", "out", "no", "unsubscribed"})
IMPORT_OPT_OUT_METHOD = "import"


@dataclass(frozen=True)
class Imported:
    """What became of one imported row: recorded (`skipped` None), or left alone and why."""

    contact_id: int | None
    skipped: str | None = None


@dataclass(frozen=True)
class Upserted:
    contact_id: int
    created: bool
    changed: bool


# ------------------------------------------------------------------------------------ upsert


def upsert_contact(cmd: c.UpsertContact, uow: UnitOfWork, svc: Services, now: datetime) -> Upserted:
    """Create or update the contact the CRM knows as `external_id` (see `commands.UpsertContact`).
    With no contact of that external id, a contact that owns the addresses and has no external id
    yet is adopted (it existed before the sync); one with another external id is a conflict."""
    uow.orgs.get(cmd.org_id)
    contact = uow.contacts.by_external_id(cmd.org_id, cmd.external_id, lock=True)
    if contact is None:
        owners = {owner for owner in (uow.contacts.find_by_address(cmd.org_id, value)
                                      for value in _normalized(cmd.phones, cmd.emails)) if owner is not None}
        if len(owners) > 1:
            raise TransitionRefused(f"the addresses belong to {len(owners)} different contacts",
                                    code="address_taken")
        if not owners:
            created = create_contact(c.CreateContact(
                cmd.org_id, name=cmd.name or "", phones=cmd.phones, emails=cmd.emails, time_zone=cmd.time_zone or None,
                region=cmd.region or None, fields=cmd.fields or {},
                marketing_allowed=True if cmd.marketing_allowed is None else cmd.marketing_allowed,
                actor=cmd.actor, external_id=cmd.external_id), uow, svc, now)
            return Upserted(created.contact_id, created=True, changed=True)
        contact = uow.contacts.get(cmd.org_id, owners.pop(), lock=True)
        if contact.external_id is not None:
            raise TransitionRefused(f"the addresses belong to the contact with external id {contact.external_id!r}",
                                    code="address_taken")
        uow.contacts.update(contact.id, now, external_id=cmd.external_id)
    values: dict[str, Any] = {}
    if cmd.name is not None and cmd.name != contact.name:
        values["name"] = cmd.name
    if cmd.time_zone is not None and (_check_zone(cmd.time_zone) or None) != contact.time_zone:
        values["time_zone"] = cmd.time_zone or None
    if cmd.region is not None and _check_region(cmd.region) != contact.region:
        values["region"] = _check_region(cmd.region)
    if cmd.fields is not None and cmd.fields != contact.fields():
        values["fields"] = cmd.fields
    if values:
        uow.contacts.update(contact.id, now, **values)
    known = {a.value for a in uow.contacts.addresses(contact.id)}
    _add_addresses(uow, cmd.org_id, contact.id, cmd.phones, cmd.emails)
    added = {a.value for a in uow.contacts.addresses(contact.id)} != known
    marketing = cmd.marketing_allowed is not None and cmd.marketing_allowed != contact.marketing_allowed
    if marketing and cmd.marketing_allowed is not None:
        uow.contacts.update(contact.id, now, marketing_allowed=cmd.marketing_allowed)
        record_marketing(uow, cmd.org_id, contact.id, cmd.actor, now, contact.marketing_allowed,
                         cmd.marketing_allowed)
    adopted = contact.external_id is None
    return Upserted(contact.id, created=False, changed=bool(values) or added or marketing or adopted)


def _normalized(phones: Iterable[str], emails: Iterable[str]) -> list[str]:
    return ([normalize_for_channel(p, Channel.TEXT) for p in phones]
            + [normalize_for_channel(e, Channel.EMAIL) for e in emails])


# ------------------------------------------------------------------------------- one imported row


def import_consent(cmd: c.ImportConsent, uow: UnitOfWork, svc: Services, now: datetime) -> Imported:
    """One imported consent or opt-out, dated as given (see the module docstring)."""
    if cmd.occurred_at > now + timedelta(minutes=5):
        raise InvalidInput("occurred_at is in the future", code="occurred_in_future")
    address = normalize_for_channel(cmd.address, cmd.channel)
    contact_id = _import_contact(uow, cmd, address, now)
    consent = uow.consents.get(cmd.org_id, address, cmd.channel, lock=True)
    if cmd.opted_in:
        methods = tuple(uow.orgs.settings(cmd.org_id).consent_methods)
        ctx = TransitionContext(actor=cmd.actor, now=now, occurred_at=cmd.occurred_at, method=cmd.method,
                                evidence=cmd.evidence, allowed_methods=methods)
        suppression = uow.suppressions.reason_for(cmd.org_id, address, cmd.channel)
        outcome = rules.imported_opt_in(cmd.org_id, contact_id, consent, ctx, suppression)
        if not outcome.changes:
            return Imported(contact_id, f"opted in since {consent.opted_in_at:%Y-%m-%d %H:%M} already"
                            if consent.opted_in_at else "already opted in")
        write_outcome(uow, outcome, now)
        release_held(uow, cmd.org_id, outcome, now)
        return Imported(contact_id)
    if not rules.imported_opt_out_applies(consent):
        return Imported(contact_id, "already opted out")
    contact = uow.contacts.get(cmd.org_id, contact_id) if contact_id is not None else None
    revoke(uow, svc, cmd.org_id, contact, rules.Revocation(
        rules.Door.IMPORT, cmd.actor, address, cmd.channel, method=cmd.method or IMPORT_OPT_OUT_METHOD,
        evidence=cmd.evidence, occurred_at=cmd.occurred_at), now, own=consent)
    return Imported(contact_id)


def _import_contact(uow: UnitOfWork, cmd: c.ImportConsent, address: str, now: datetime) -> int | None:
    """The contact of an imported row: by external id, else by address (a contact without an
    external id then gets the row's, as the upsert adopts it); created (with the row's addresses)
    when the row names one and none is found. None: the consent is kept on the address alone,
    like an opt-out from a number no contact has."""
    owner = uow.contacts.find_by_address(cmd.org_id, address)
    phones = [a for a in (address, *cmd.other_addresses) if not looks_like_email(a)]
    emails = [a for a in (address, *cmd.other_addresses) if looks_like_email(a)]
    if cmd.external_id:
        contact = uow.contacts.by_external_id(cmd.org_id, cmd.external_id)
        if contact is not None:
            if owner is not None and owner != contact.id:
                raise TransitionRefused(f"{address} belongs to contact {owner}, not to external id "
                                        f"{cmd.external_id!r}", code="address_taken")
            _add_addresses(uow, cmd.org_id, contact.id, phones, emails)
            return contact.id
    if owner is not None:
        if cmd.external_id:
            found = uow.contacts.get(cmd.org_id, owner)
            if found.external_id is not None:
                raise TransitionRefused(f"{address} belongs to the contact with external id {found.external_id!r}",
                                        code="address_taken")
            uow.contacts.update(owner, now, external_id=cmd.external_id)
        return owner
    if not (cmd.external_id or cmd.name):
        return None
    created = uow.contacts.create(cmd.org_id, now, name=cmd.name or "", external_id=cmd.external_id or None)
    _add_addresses(uow, cmd.org_id, created, phones, emails)
    return created


def add_suppression(cmd: c.AddSuppression, uow: UnitOfWork, svc: Services, now: datetime) -> Imported:
    """Put an address on the suppression list: the policy refuses every message to it from now
    on (queued ones are cancelled), and the ledger records who did it and why."""
    reason = cmd.reason.strip()
    if not reason:
        raise InvalidInput("a suppression needs a reason", code="reason_required")
    channel_for_form = cmd.channel or (Channel.EMAIL if looks_like_email(cmd.address) else Channel.TEXT)
    address = normalize_for_channel(cmd.address, channel_for_form)
    label = cmd.channel.value if cmd.channel else "all"
    contact = uow.contacts.at_address(cmd.org_id, address)
    contact_id = contact.id if contact is not None else None
    if uow.suppressions.get(cmd.org_id, address, label) is not None:
        return Imported(contact_id, "already suppressed")
    uow.suppressions.add(cmd.org_id, address, label, reason[:500], cmd.actor.kind.value, cmd.actor.id, now)
    uow.ledger.append_change(
        cmd.org_id, contact_id, channel=label, address=address, from_state="suppression:none",
        to_state="suppression:on", trigger="suppressed", method=IMPORT_OPT_OUT_METHOD,
        actor_kind=cmd.actor.kind.value, actor_id=cmd.actor.id, source_message_id=None, evidence=reason[:500],
        occurred_at=now, recorded_at=now)
    cancel_outbound(uow, cmd.org_id, address, [cmd.channel] if cmd.channel else list(Channel))
    return Imported(contact_id)


HANDLERS: dict[type, Callable[..., Any]] = {
    c.UpsertContact: upsert_contact,
    c.ImportConsent: import_consent,
    c.AddSuppression: add_suppression,
}


# ------------------------------------------------------------------------------- rows of a file


@dataclass(frozen=True)
class Row:
    line: int  # where the row starts in the file (a quoted field may span lines)
    fields: tuple[str, ...]  # as in the file
    values: dict[str, str]  # column (lower case) -> the field without surrounding spaces
    problem: str | None  # why the row cannot be read, e.g. a field too many


class HeaderRefused(InvalidInput):
    """The file's header does not fit the import: nothing is imported."""


def check_header(header: Sequence[str], kind: str) -> list[str]:
    """The columns (lower case) of a header line, or `HeaderRefused` saying what is wrong. A
    column the import would ignore is refused: it could hold what must not be lost."""
    known, required = COLUMNS[kind]
    columns = [name.strip().lower() for name in header]
    if "" in columns:
        raise HeaderRefused(f"column {columns.index('') + 1} of the header has no name")
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise HeaderRefused(f"the header names {', '.join(map(repr, repeated))} more than once")
    unknown = [name for name, column in zip(header, columns, strict=True)
               if column not in known and column not in REJECTS_COLUMNS]
    if unknown:
        raise HeaderRefused(f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}: "
                            f"this import reads only {', '.join(known)}")
    missing = [column for column in required if column not in columns]
    if missing:
        raise HeaderRefused(f"the header lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if not set(ADDRESS_COLUMNS) & set(columns):
        raise HeaderRefused("the header must have a 'phone' or 'email' column")
    return columns


def read_rows(lines: Iterable[str], kind: str) -> Iterator[Row]:
    """The rows of a CSV text given line by line (newlines kept), after its header, which is
    checked first (`HeaderRefused`); blank lines are passed over. Streams: one row at a time.
    Raises `csv.Error` for text that cannot be read as CSV."""
    reader = csv.reader(iter(lines))
    columns: list[str] | None = None
    start = 1
    for fields in reader:
        line, start = start, reader.line_num + 1
        if not any(value.strip() for value in fields):
            continue
        if columns is None:
            columns = check_header(fields, kind)
            continue
        problem = None
        if len(fields) != len(columns):
            problem = (f"{len(fields)} field{'s' if len(fields) != 1 else ''} where the header has "
                       f"{len(columns)} (a separator too many or too few, or a quote not closed?)")
        # Made storable (a NUL or a lone surrogate becomes U+FFFD): PostgreSQL refuses them.
        values = {} if problem else {column: storable(value.strip())
                                     for column, value in zip(columns, fields, strict=True)
                                     if column not in REJECTS_COLUMNS}
        yield Row(line, tuple(fields), values, problem)
    if columns is None:
        known, _ = COLUMNS[kind]
        raise HeaderRefused(f"the file is empty: it needs a header line naming its columns ({', '.join(known)})")


def parse_time(text: str) -> datetime:
    """An ISO-8601 date or date-time; without a zone it is read as UTC."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"occurred_at {text!r} is not an ISO-8601 date-time (e.g. 2026-03-01T09:00:00Z)",
                           code="invalid_time") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _channel(text: str, default: Channel | None = None) -> Channel | None:
    if not text:
        return default
    try:
        return Channel(text.lower())
    except ValueError:
        raise InvalidInput(f"unknown channel {text!r}: use one of {', '.join(ch.value for ch in Channel)}",
                           code="unknown_channel") from None


def consent_command(values: dict[str, str], org_id: int, actor: Actor) -> c.ImportConsent:
    """The command of one row of a consent file, or `InvalidInput` saying what is wrong."""
    channel = _channel(values.get("channel", ""))
    if channel is None:
        raise InvalidInput("no channel", code="channel_required")
    state = values.get("state", "").lower()
    if state not in OPTED_IN_WORDS | OPTED_OUT_WORDS:
        raise InvalidInput(f"state must be opted_in or opted_out, not {values.get('state', '')!r}",
                           code="invalid_state")
    phone, email = values.get("phone", ""), values.get("email", "")
    address, other = (email, phone) if channel is Channel.EMAIL else (phone, email)
    if not address:
        raise InvalidInput(f"no {'email' if channel is Channel.EMAIL else 'phone'} for the {channel.value} channel",
                           code="no_address")
    when = values.get("occurred_at", "")
    if not when:
        raise InvalidInput("no occurred_at (when the consent or opt-out was given)", code="occurred_at_required")
    opted_in = state in OPTED_IN_WORDS
    method = values.get("method", "")
    if opted_in and not method:
        raise InvalidInput("no method (how the consent was obtained)", code="method_required")
    source, evidence = values.get("source", ""), values.get("evidence", "")
    proof = "; ".join(part for part in (f"source: {source}" if source else "", evidence) if part) or None
    return c.ImportConsent(
        org_id, actor, channel, address, opted_in=opted_in, occurred_at=parse_time(when), method=method,
        evidence=proof[:1000] if proof else None, external_id=values.get("external_id") or None,
        name=values.get("name") or None, other_addresses=(other,) if other else ())


def suppression_command(values: dict[str, str], org_id: int, actor: Actor) -> c.AddSuppression:
    address = values.get("phone") or values.get("email") or ""
    if values.get("phone") and values.get("email"):
        raise InvalidInput("a suppression row names one address: a phone or an email, not both",
                           code="one_address")
    if not address:
        raise InvalidInput("no phone or email", code="no_address")
    return c.AddSuppression(org_id, actor, address, values.get("reason", ""), _channel(values.get("channel", "")))


COMMANDS: dict[str, Callable[[dict[str, str], int, Actor], c.Command]] = {
    "consents": consent_command, "suppressions": suppression_command,
}


# ------------------------------------------------------------------------------- batches


@dataclass
class Tally:
    imported: int = 0
    skipped: int = 0
    rejected: int = 0
    rows: int = 0


def import_batch(bus: MessageBus, kind: str, org_id: int, actor: Actor, rows: Sequence[Row], tally: Tally) -> list[
        tuple[Row, str | None, str | None]]:
    """Handle one batch of rows in one transaction (a savepoint each). Returns, per row, what
    became of it: (row, why it was skipped, why it was rejected)."""
    outcomes: list[tuple[Row, str | None, str | None]] = []
    commands: list[c.Command] = []
    handled_rows: list[Row] = []
    for row in rows:
        if row.problem:
            outcomes.append((row, None, row.problem))
            continue
        try:
            commands.append(COMMANDS[kind](row.values, org_id, actor))
            handled_rows.append(row)
        except DomainError as exc:
            outcomes.append((row, None, str(exc)))
    for row, done in zip(handled_rows, bus.handle_batch(commands) if commands else [], strict=True):
        if done.error is None:
            outcomes.append((row, done.result.skipped, None))
        elif isinstance(done.error, DomainError):
            outcomes.append((row, None, str(done.error)))
        else:
            log.error("importing line %d failed", row.line, exc_info=done.error)
            outcomes.append((row, None, f"not imported: {type(done.error).__name__} (see the server log)"))
    outcomes.sort(key=lambda outcome: outcome[0].line)
    for _, skipped, rejected in outcomes:
        tally.rows += 1
        if rejected is not None:
            tally.rejected += 1
        elif skipped is not None:
            tally.skipped += 1
        else:
            tally.imported += 1
    return outcomes


def batches(rows: Iterable[Row], size: int = BATCH_ROWS) -> Iterator[list[Row]]:
    batch: list[Row] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# ------------------------------------------------------------------------------- API jobs


def count_rows(text: str, kind: str) -> int:
    """Check a file sent to the API (its header, that it reads as CSV) and count its rows;
    `HeaderRefused` or `InvalidInput` when it cannot be imported at all."""
    try:
        return sum(1 for _ in read_rows(io.StringIO(text, newline=""), kind))
    except csv.Error as exc:
        raise InvalidInput(f"the file cannot be read as CSV ({exc})", code="invalid_csv") from None


def header_of(text: str) -> list[str]:
    """The header line of a file whose header was checked (`count_rows`), without the columns of
    an earlier rejects file: the columns of its rejects."""
    for fields in csv.reader(io.StringIO(text, newline="")):
        if any(value.strip() for value in fields):
            return [name for name in fields if name.strip().lower() not in REJECTS_COLUMNS]
    return []


def header_of_file(text: str) -> list[str]:
    """The header line of a file as it is (with the columns of an earlier rejects file)."""
    for fields in csv.reader(io.StringIO(text, newline="")):
        if any(value.strip() for value in fields):
            return fields
    return []


def run_import_jobs(bus: MessageBus, clock: Callable[[], datetime], *, max_jobs: int = 1) -> int:
    """Process waiting API import jobs (the scheduler calls this): each is claimed with a
    lease, read row by row from where it got to, handled in batches, and its progress and
    rejects written after each batch. Returns the number of jobs finished."""
    finished = 0
    for _ in range(max_jobs):
        now = clock()
        with bus.uow() as uow:
            claimed = uow.import_jobs.claim(now, now + JOB_LEASE, uow.skip_locked)
            if claimed is not None:
                job, source = claimed
                uow.commit()
        if claimed is None:
            break
        _run_job(bus, clock, job, source)
        finished += 1
    return finished


def _run_job(bus: MessageBus, clock: Callable[[], datetime], job: Any, source: str) -> None:
    actor = Actor(ActorKind.INTEGRATION, f"import:{job.id}")
    if job.agent_id is not None:
        with bus.uow(read_only=True) as uow:
            agent = uow.agents.get(job.agent_id)
        if agent is not None:
            actor = actor_of_token(agent.id, agent.role)
    tally = Tally(imported=job.imported, skipped=job.skipped, rejected=job.rejected, rows=job.rows_done)
    header = header_of_file(source)
    earlier_rejects = {i for i, name in enumerate(header) if name.strip().lower() in REJECTS_COLUMNS}
    try:
        rows = read_rows(io.StringIO(source, newline=""), job.kind)
        pending = (row for index, row in enumerate(rows) if index >= job.rows_done)
        for batch in batches(pending, BATCH_ROWS):
            outcomes = import_batch(bus, job.kind, job.org_id, actor, batch, tally)
            with bus.uow() as uow:
                uow.import_jobs.add_rejects(job.id, [(row.line, reason, [f for i, f in enumerate(row.fields)
                                                                          if i not in earlier_rejects])
                                                     for row, _, reason in outcomes if reason is not None])
                uow.import_jobs.progress(job.id, rows_done=tally.rows, imported=tally.imported, skipped=tally.skipped,
                                         rejected=tally.rejected, lease_until=clock() + JOB_LEASE)
                uow.commit()
        error = None
    except Exception as exc:  # the job fails with its reason; the rows done so far stay
        log.exception("import job %d failed", job.id)
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
    with bus.uow() as uow:
        uow.import_jobs.finish(job.id, clock(), error)
        uow.commit()


def actor_of_token(agent_id: int, role: str) -> Actor:
    """Who acts with an API token: its agent, or, for a token of role `integration`, the
    integration (the ledger shows `integration` and the token's id)."""
    kind = ActorKind.INTEGRATION if role == INTEGRATION_ROLE else ActorKind.AGENT
    return Actor(kind, str(agent_id), role)

