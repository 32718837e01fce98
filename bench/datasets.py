"""The benchmark's databases: one org with many contacts, their text consents, a long consent
ledger with a valid hash chain, and drip enrolments.

Rows go in through the driver in bulk (sqlite3 `executemany` in big transactions, PostgreSQL
`COPY`), never through the service layer: a million contacts through the API would take longer
than the whole benchmark. SQLite databases are built once into `bench/.cache/`, keyed by a hash
of the schema and of this file's layout (`DATASET_VERSION`), and copied for each run, so a re-run
starts in seconds and never sees a previous run's traffic.
"""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.schema import CreateIndex, CreateTable

from optflow.adapters import db, orm
from optflow.adapters.flow_loader import load_flows
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.domain.ledger import GENESIS, entry_hash
from optflow.service_layer import admin

BENCH_DIR = Path(__file__).resolve().parent
CACHE_DIR = BENCH_DIR / ".cache"
BENCH_FLOWS_DIR = BENCH_DIR / "flows"
DATASET_VERSION = 3  # bump when the rows written below change

ORG_NAME = "Bench Motors"
ORG_NUMBER = "+12025550123"
TWILIO_TOKEN = "bench-twilio-auth-token-0123456789"
ORG_SETTINGS: dict[str, Any] = {"twilio_auth_token": TWILIO_TOKEN, "quiet_hours": False,
                                "program_name": "Bench Motors alerts"}
DRIP_FLOW = "bench_drip"
HISTORY_START = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
IDLE_UNTIL = datetime(2099, 1, 1, tzinfo=UTC)  # enrolments that are never due during a run
RESERVED = 50  # the last contacts of every dataset: opted in, and never in the load's traffic
CHUNK = 50_000


@dataclass(frozen=True)
class Dataset:
    name: str
    contacts: int
    ledger_entries: int
    due_enrollments: int = 0  # the first contacts' enrolments are due now (the dispatch scenario)

    def opted_in(self, i: int) -> bool:
        """Contact `i` (1-based) has an opted-in text consent: every other contact, every contact
        with a due enrolment, and the reserved contacts."""
        return i % 2 == 1 or i <= self.due_enrollments or i > self.contacts - RESERVED

    @property
    def traffic_contacts(self) -> int:
        """Contacts 1..this may appear in the load's traffic."""
        return self.contacts - RESERVED

    def reserved(self, count: int) -> list[int]:
        if count > RESERVED:
            raise ValueError(f"at most {RESERVED} reserved contacts")
        return list(range(self.contacts - count + 1, self.contacts + 1))


SMALL = Dataset("10k", 10_000, 100_000)
LARGE = Dataset("1m", 1_000_000, 10_000_000)
DISPATCH = Dataset("dispatch", 100_000, 100_000, due_enrollments=100_000)


def contact_number(i: int) -> str:
    """The phone number of contact `i`: valid US numbers, 415-200-0001 upwards."""
    return f"+1415{2_000_000 + i:07d}"


def flow_version(name: str = DRIP_FLOW) -> tuple[str, str, str]:
    """(version, source file, source) of a benchmark flow (the drip unless named), as the flow
    loader computes them."""
    flow = load_flows(BENCH_FLOWS_DIR, ())[name]
    return flow.version, flow.source_file, Path(flow.source_file).read_text(encoding="utf-8")


def schema_fingerprint(dialect_name: str = "sqlite") -> str:
    dialect = sqlite.dialect() if dialect_name == "sqlite" else postgresql.dialect()
    parts = [f"dataset-v{DATASET_VERSION}", flow_version()[0]]
    for table in orm.metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)))
        parts.extend(str(CreateIndex(index).compile(dialect=dialect)) for index in sorted(table.indexes, key=str))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


# ------------------------------------------------------------------------------------- rows

def _db_time(value: datetime) -> str:
    """How SQLAlchemy stores a UTC datetime (without zone) on SQLite, and a literal PostgreSQL reads."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


CONTACT_COLUMNS = ("id", "org_id", "name", "time_zone", "region", "fields_json", "active", "do_not_call",
                   "marketing_allowed", "dnd_all", "dnd_channels", "created_at", "updated_at")
ADDRESS_COLUMNS = ("id", "org_id", "contact_id", "kind", "value")
CONSENT_COLUMNS = ("id", "org_id", "contact_id", "address", "channel", "state", "awaiting_pin", "opted_in_at",
                   "requested_at", "opted_out_at", "method", "version", "opt_out_confirmation_sent", "pin_hash",
                   "pin_expires_at", "pin_attempts", "updated_at")
LEDGER_COLUMNS = ("id", "org_id", "seq", "contact_id", "channel", "address", "from_state", "to_state", "trigger",
                  "method", "actor_kind", "actor_id", "source_message_id", "evidence", "occurred_at", "recorded_at",
                  "prev_hash", "hash")
ENROLLMENT_COLUMNS = ("id", "org_id", "contact_id", "flow_name", "flow_version", "pc", "status", "next_run_at",
                      "event_json", "started_at", "ended_at", "end_reason")


def contact_rows(ds: Dataset, org_id: int) -> Iterator[tuple[Any, ...]]:
    created = _db_time(HISTORY_START)
    for i in range(1, ds.contacts + 1):
        yield (i, org_id, f"Customer {i}", "America/Los_Angeles", "CA", "{}", ds.opted_in(i), False, True, False,
               "", created, created)


def address_rows(ds: Dataset, org_id: int) -> Iterator[tuple[Any, ...]]:
    for i in range(1, ds.contacts + 1):
        yield (i, org_id, i, "phone", contact_number(i))


def consent_rows(ds: Dataset, org_id: int) -> Iterator[tuple[Any, ...]]:
    at = _db_time(HISTORY_START)
    row_id = 0
    for i in range(1, ds.contacts + 1):
        if ds.opted_in(i):
            row_id += 1
            yield (row_id, org_id, i, contact_number(i), "text", "opted_in", False, at, at, None, "web_form", 1,
                   False, None, None, 0, at)


# A contact's history cycles through these transitions (trigger, from, to, evidence).
_HISTORY = (("request_opt_in", "unknown", "requested", "agent request"), ("accept", "requested", "opted_in", "YES"),
            ("opt_out", "opted_in", "opted_out", "STOP"), ("accept", "opted_out", "opted_in", "START"))


def ledger_rows(ds: Dataset, org_id: int) -> Iterator[tuple[Any, ...]]:
    """The org's hash chain, entry by entry, four entries a second from `HISTORY_START`. The hash
    is `optflow.domain.ledger.entry_hash`, computed here from a preformatted string (several times
    faster); the first entries are checked against the real function, so a change there fails the
    build instead of writing a broken chain."""
    prev = GENESIS
    second, iso, stored = -1, "", ""
    for seq in range(1, ds.ledger_entries + 1):
        contact = (seq - 1) % ds.contacts + 1
        trigger, from_state, to_state, evidence = _HISTORY[((seq - 1) // ds.contacts) % len(_HISTORY)]
        address = contact_number(contact)
        if seq // 4 != second:
            second = seq // 4
            moment = HISTORY_START + timedelta(seconds=second)
            iso, stored = moment.isoformat(timespec="microseconds"), _db_time(moment)
        sid = f"SM{seq:032x}"
        content = (f'["{prev}",{org_id},{seq},{contact},"text","{address}","{from_state}","{to_state}",'
                   f'"{trigger}","keyword","customer","{address}","{sid}","{evidence}","{iso}","{iso}"]')
        digest = hashlib.sha256(content.encode()).hexdigest()
        if seq <= 1000:
            fields = dict(zip(LEDGER_COLUMNS[1:16], (org_id, seq, contact, "text", address, from_state, to_state,
                                                     trigger, "keyword", "customer", address, sid, evidence,
                                                     moment, moment), strict=True))
            if entry_hash(prev, fields) != digest:
                raise AssertionError("the benchmark's ledger hash no longer matches optflow.domain.ledger")
        yield (seq, org_id, seq, contact, "text", address, from_state, to_state, trigger, "keyword", "customer",
               address, sid, evidence, stored, stored, prev, digest)
        prev = digest


def enrollment_rows(ds: Dataset, org_id: int, version: str) -> Iterator[tuple[Any, ...]]:
    started = _db_time(HISTORY_START)
    idle, due = _db_time(IDLE_UNTIL), _db_time(HISTORY_START)
    for i in range(1, ds.contacts + 1):
        yield (i, org_id, i, DRIP_FLOW, version, 0, "active", due if i <= ds.due_enrollments else idle, "{}",
               started, None, None)


# ------------------------------------------------------------------------------------- building

def _create_org(engine: Engine) -> int:
    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, ORG_NAME, HISTORY_START, numbers=(ORG_NUMBER,), settings=ORG_SETTINGS)
        version, source_file, source = flow_version()
        uow.enrollments.remember_version(DRIP_FLOW, version, source_file, source, HISTORY_START)
        uow.commit()
    return org_id


def _chunks(rows: Iterable[tuple[Any, ...]], size: int = CHUNK) -> Iterator[list[tuple[Any, ...]]]:
    chunk: list[tuple[Any, ...]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _tables(ds: Dataset, org_id: int, version: str) -> list[tuple[str, tuple[str, ...], Iterable[tuple[Any, ...]]]]:
    return [
        ("contacts", CONTACT_COLUMNS, contact_rows(ds, org_id)),
        ("addresses", ADDRESS_COLUMNS, address_rows(ds, org_id)),
        ("consents", CONSENT_COLUMNS, consent_rows(ds, org_id)),
        ("enrollments", ENROLLMENT_COLUMNS, enrollment_rows(ds, org_id, version)),
        ("ledger", LEDGER_COLUMNS, ledger_rows(ds, org_id)),
    ]


def build_sqlite(ds: Dataset, path: Path, progress: Callable[[str], None] = print) -> None:
    """Create the schema with optflow's own metadata, then bulk-load the rows with sqlite3."""
    path.unlink(missing_ok=True)
    engine = db.make_engine(f"sqlite:///{path}")
    db.create_schema(engine)
    org_id = _create_org(engine)
    engine.dispose()
    version = flow_version()[0]
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=OFF")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-1000000")  # 1 GB of page cache while building
        head = GENESIS
        for table, columns, rows in _tables(ds, org_id, version):
            started = time.perf_counter()
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
            count = 0
            for chunk in _chunks(rows):
                conn.execute("BEGIN")
                conn.executemany(sql, chunk)
                conn.execute("COMMIT")
                count += len(chunk)
                if table == "ledger":
                    head = chunk[-1][-1]
            progress(f"  {table}: {count:,} rows in {time.perf_counter() - started:.1f} s")
        conn.execute("UPDATE ledger_heads SET seq = ?, hash = ? WHERE org_id = ?", (ds.ledger_entries, head, org_id))
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()


def cached_sqlite(ds: Dataset, progress: Callable[[str], None] = print) -> Path:
    """The dataset's SQLite file in the cache, built first if needed."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"sqlite-{ds.name}-{schema_fingerprint('sqlite')}.db"
    if not path.exists():
        for stale in CACHE_DIR.glob(f"sqlite-{ds.name}-*.db"):
            stale.unlink()
        progress(f"building the {ds.name} SQLite dataset ({ds.contacts:,} contacts, {ds.ledger_entries:,} ledger "
                 f"entries) into {path.relative_to(BENCH_DIR.parent)} (once; later runs reuse it)")
        started = time.perf_counter()
        partial = path.with_suffix(".partial")
        build_sqlite(ds, partial, progress)
        partial.rename(path)
        Path(f"{partial}-writer").unlink(missing_ok=True)  # optflow's writer lock file (adapters/db.py)
        progress(f"  built in {time.perf_counter() - started:.0f} s")
    return path


def working_copy(source: Path, target: Path) -> str:
    """Copy a cached database for one run; returns its SQLAlchemy URL."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)
    return f"sqlite:///{target}"


# ------------------------------------------------------------------------------------- PostgreSQL

def postgres_database(base_url: str, name: str) -> str:
    """A fresh database `name` on the server of `base_url` (dropped first if it exists); its URL.
    The database `base_url` names is never touched."""
    url = make_url(db.database_url(base_url))
    admin_engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin_engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def postgres_clone(base_url: str, template: str, name: str) -> str:
    """A copy of the database `template` (a file-level copy on the server: seconds, not a rebuild)."""
    url = make_url(db.database_url(base_url))
    admin_engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin_engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    admin_engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def build_postgres(ds: Dataset, url: str, progress: Callable[[str], None] = print) -> None:
    """The same rows as `build_sqlite`, through COPY, then the id sequences moved past them."""
    engine = db.make_engine(url)
    db.create_schema(engine)
    org_id = _create_org(engine)
    version = flow_version()[0]
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        head = GENESIS
        for table, columns, rows in _tables(ds, org_id, version):
            started = time.perf_counter()
            count = 0
            with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row in rows:
                    copy.write_row(row)
                    count += 1
                    if table == "ledger":
                        head = row[-1]
            raw.commit()
            progress(f"  {table}: {count:,} rows in {time.perf_counter() - started:.1f} s")
            cursor.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                           f"(SELECT COALESCE(MAX(id), 1) FROM {table}))")
        cursor.execute("UPDATE ledger_heads SET seq = %s, hash = %s WHERE org_id = %s",
                       (ds.ledger_entries, head, org_id))
        cursor.execute("ANALYZE")
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def describe(ds: Dataset) -> dict[str, Any]:
    return {"name": ds.name, "contacts": ds.contacts, "ledger_entries": ds.ledger_entries,
            "due_enrollments": ds.due_enrollments, "enrollments": ds.contacts}

