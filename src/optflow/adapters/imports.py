"""The suppression list and the API's import jobs (`orm.SuppressionRow`, `ImportJobRow`,
`ImportRejectRow`)."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime

from sqlalchemy import Connection, and_, bindparam, insert, or_, select, update

from ..domain.model import Channel
from ..domain.records import ALL_CHANNELS, ImportJob, ImportReject, Suppression
from . import orm
from .prepared import Prepared, bind_list, bind_values

# Asked by every policy decision, so built once (docs/performance.md).
_SUPPRESSION_REASON = Prepared(select(orm.suppressions.c.reason).where(and_(
    orm.suppressions.c.org_id == bindparam("w_org_id"), orm.suppressions.c.address == bindparam("w_address"),
    or_(orm.suppressions.c.channel == bindparam("w_channel"), orm.suppressions.c.channel == ALL_CHANNELS),
)).order_by(orm.suppressions.c.id).limit(1))


_ANY_SUPPRESSION = Prepared(select(orm.suppressions.c.id).where(
    orm.suppressions.c.org_id == bindparam("w_org_id")).limit(1))


class SuppressionRepository:
    """The suppression list. Most orgs have none: an org found without any in this transaction is
    not asked about again (one statement per org and batch instead of one per message)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._known_empty: dict[int, bool] = {}  # org id -> it had no suppression when first asked

    def _has_none(self, org_id: int) -> bool:
        empty = self._known_empty.get(org_id)
        if empty is None:
            empty = self._known_empty[org_id] = _ANY_SUPPRESSION.scalar(self.conn, {"w_org_id": org_id}) is None
        return empty

    def reason_for(self, org_id: int, address: str, channel: Channel) -> str | None:
        """Why `address` must not get messages on `channel`, or None when it is not suppressed."""
        if self._has_none(org_id):
            return None
        reason: str | None = _SUPPRESSION_REASON.scalar(
            self.conn, {"w_org_id": org_id, "w_address": address, "w_channel": channel.value})
        return reason

    def get(self, org_id: int, address: str, channel: str) -> Suppression | None:
        table = orm.suppressions
        row = self.conn.execute(select(table.c.address, table.c.channel, table.c.reason, table.c.created_at).where(
            and_(table.c.org_id == org_id, table.c.address == address, table.c.channel == channel))).first()
        return Suppression(*row) if row is not None else None

    def add(self, org_id: int, address: str, channel: str, reason: str, actor_kind: str, actor_id: str | None,
            now: datetime) -> None:
        self._known_empty[org_id] = False
        self.conn.execute(insert(orm.suppressions).values(
            org_id=org_id, address=address, channel=channel, reason=reason, actor_kind=actor_kind,
            actor_id=actor_id, created_at=now))

    def for_addresses(self, org_id: int, addresses: Sequence[str]) -> list[Suppression]:
        """The suppressions of some addresses, oldest first (the flow batches' preload)."""
        if not addresses or self._has_none(org_id):
            return []
        params = {"w_org_id": org_id, **bind_values("w_address", addresses)}
        return _suppressions_for_addresses(len(addresses)).records(self.conn, params, _suppression)


def _suppression(values: Sequence[object]) -> Suppression:
    return Suppression(*values)  # type: ignore[arg-type]


@functools.lru_cache(maxsize=32)
def _suppressions_for_addresses(count: int) -> Prepared:
    table = orm.suppressions
    return Prepared(select(table.c.address, table.c.channel, table.c.reason, table.c.created_at).where(
        table.c.org_id == bindparam("w_org_id"), table.c.address.in_(bind_list("w_address", count)),
    ).order_by(table.c.id))


_JOB_COLUMNS = tuple(orm.import_jobs.c[name] for name in (
    "id", "org_id", "agent_id", "kind", "status", "rows_total", "rows_done", "imported", "skipped", "rejected",
    "error", "created_at", "finished_at", "header_json"))


class ImportJobRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, org_id: int, agent_id: int | None, kind: str, source: str, rows_total: int, now: datetime,
            header: Sequence[str] = ()) -> int:
        result = self.conn.execute(insert(orm.import_jobs).values(
            org_id=org_id, agent_id=agent_id, kind=kind, status="queued", source=source, rows_total=rows_total,
            header_json=json.dumps(list(header)),
            rows_done=0, imported=0, skipped=0, rejected=0, created_at=now))
        return int(result.inserted_primary_key[0])  # type: ignore[index]

    def get(self, org_id: int, job_id: int) -> ImportJob | None:
        table = orm.import_jobs
        query = select(*_JOB_COLUMNS).where(and_(table.c.id == job_id, table.c.org_id == org_id))
        row = self.conn.execute(query).first()
        return ImportJob(*row) if row is not None else None

    def claim(self, now: datetime, lease_until: datetime, skip_locked: bool) -> tuple[ImportJob, str] | None:
        """The oldest job waiting (queued, or running with its lease run out: its worker died),
        now `running` until `lease_until`, with its file."""
        table = orm.import_jobs
        query = select(*_JOB_COLUMNS, table.c.source).where(or_(
            table.c.status == "queued", and_(table.c.status == "running", table.c.lease_until <= now),
        )).order_by(table.c.id).limit(1)
        if skip_locked:
            query = query.with_for_update(skip_locked=True)
        row = self.conn.execute(query).first()
        if row is None:
            return None
        job = ImportJob(*row[:-1])
        self.conn.execute(update(table).where(table.c.id == job.id).values(status="running", lease_until=lease_until))
        return job, row[-1]

    def progress(self, job_id: int, *, rows_done: int, imported: int, skipped: int, rejected: int,
                 lease_until: datetime) -> None:
        self.conn.execute(update(orm.import_jobs).where(orm.import_jobs.c.id == job_id).values(
            rows_done=rows_done, imported=imported, skipped=skipped, rejected=rejected, lease_until=lease_until))

    def finish(self, job_id: int, now: datetime, error: str | None = None) -> None:
        """Done (or failed with `error`): the file itself is not kept."""
        self.conn.execute(update(orm.import_jobs).where(orm.import_jobs.c.id == job_id).values(
            status="failed" if error else "done", error=error, source="", lease_until=None, finished_at=now))

    def add_rejects(self, job_id: int, rejects: Iterable[tuple[int, str, Sequence[str]]]) -> None:
        rows = [{"import_id": job_id, "line": line, "reason": reason, "fields_json": json.dumps(list(fields))}
                for line, reason, fields in rejects]
        if rows:
            self.conn.execute(insert(orm.import_rejects), rows)

    def rejects(self, job_id: int, batch: int = 1000) -> Iterator[ImportReject]:
        """The rejected rows in file order, read a batch at a time."""
        table = orm.import_rejects
        after = 0
        while True:
            rows = self.conn.execute(select(table.c.id, table.c.line, table.c.reason, table.c.fields_json).where(
                and_(table.c.import_id == job_id, table.c.id > after)).order_by(table.c.id).limit(batch)).all()
            if not rows:
                return
            for row in rows:
                yield ImportReject(row[1], row[2], json.loads(row[3]))
            after = rows[-1][0]
