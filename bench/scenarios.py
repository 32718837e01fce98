"""The benchmark's scenarios. Each measures optflow and, in the same run, its ceiling.

- inbound: signed Twilio webhooks against `optflow serve` (2 workers, no scheduler) on the 10k
  database, vs a bare Sanic route; afterwards the server is SIGKILLed and every acknowledged
  message must be in the database, and the ledger chain must verify.
- scale: the same load on the 1M-contact, 10M-entry database; memory and latency vs the 10k run.
- fan-out: a contact enrolled in 50 flows texts STOP, at 10k and at 1M contacts, vs the same
  rows written with plain SQL.
- dispatch: 100,000 enrolments due at once through `FlowEngine.run_due`, vs plain batched
  inserts of the same outbox rows through the same driver.
- classifier: the median cost of classifying one message of the labelled corpus, vs the
  classifier before issue 13 (bench/classifier.py).
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import sys
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, insert, select

from optflow.adapters import db, ledger_files, orm
from optflow.bootstrap import System, bootstrap
from optflow.config import Config
from optflow.domain import commands as c
from optflow.domain.ledger import entry_hash
from optflow.domain.model import Channel, State

from . import datasets as ds
from .classifier import classifier
from .load import LoadResult, run_load, write_requests
from .procs import ServerProcess, free_port, start_server
from .report import Figure, Report

REPO = ds.BENCH_DIR.parent
FANOUT_FLOWS = 50
FANOUT_CONTACTS = 20
DISPATCH_BATCH = 500  # FlowEngine.run_due's batch: one transaction per batch on both sides
MAX_RATE = 20_000  # requests/s the request files are sized for (no MessageSid is sent twice)


@dataclass
class Settings:
    duration: float = 10.0
    warmup: float = 2.0
    connections: int = 64
    workers: int = 2
    small: ds.Dataset = ds.SMALL
    large: ds.Dataset = ds.LARGE
    dispatch: ds.Dataset = ds.DISPATCH


@dataclass
class Run:
    """What the scenarios share in one benchmark run."""

    report: Report
    settings: Settings
    work: Path
    wrk: str | None
    postgres_url: str | None = None
    log: Callable[[str], None] = print
    databases: dict[str, str] = field(default_factory=dict)  # dataset name -> working database URL
    inbound_runs: dict[str, InboundRun] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "postgresql" if self.postgres_url else "sqlite"

    def fresh_database(self, dataset: ds.Dataset, copy: str) -> str:
        """A database of `dataset` that nobody used yet: a copy of the cached SQLite file, or a
        PostgreSQL database cloned from the one built earlier in this run."""
        if self.postgres_url:
            template = f"optflow_bench_{dataset.name}"
            if template not in self.databases:
                self.log(f"building the {dataset.name} dataset on PostgreSQL ({dataset.contacts:,} contacts, "
                         f"{dataset.ledger_entries:,} ledger entries)")
                started = time.perf_counter()
                url = ds.postgres_database(self.postgres_url, template)
                ds.build_postgres(dataset, url, self.log)
                self.databases[template] = url
                self.log(f"  built in {time.perf_counter() - started:.0f} s")
            return ds.postgres_clone(self.postgres_url, template, f"{template}_{copy}")
        source = ds.cached_sqlite(dataset, self.log)
        return ds.working_copy(source, self.work / f"{dataset.name}-{copy}.db")


# ------------------------------------------------------------------------------------- servers

def flows_directory(target: Path, *sources: Path) -> Path:
    """One flows directory made of several (their YAML files and content templates)."""
    (target / "templates").mkdir(parents=True, exist_ok=True)
    for source in sources:
        for file in source.glob("*.yaml"):
            shutil.copy(file, target / file.name)
        for template in (source / "templates").glob("*.j2"):
            shutil.copy(template, target / "templates" / template.name)
    return target


def start_optflow(run: Run, database_url: str, name: str) -> ServerProcess:
    port = free_port()
    flows = flows_directory(run.work / "server-flows", REPO / "flows", ds.BENCH_FLOWS_DIR)
    command = [sys.executable, "-m", "optflow", "--database", database_url, "serve", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(run.settings.workers), "--no-scheduler"]
    return start_server(name, command, run.work / f"{name}.log", port=port, cwd=run.work,
                        env={"OPTFLOW_FLOWS_DIR": str(flows), "OPTFLOW_SECRET": "bench-secret"})


def start_ceiling(run: Run, reply_bytes: int) -> ServerProcess:
    port = free_port()
    command = [sys.executable, "-m", "bench.bare_server", "--port", str(port), "--workers",
               str(run.settings.workers), "--reply-bytes", str(reply_bytes)]
    return start_server("ceiling", command, run.work / "ceiling.log", port=port, cwd=REPO)


def sample_replies(server: ServerProcess, requests_file: Path, count: int = 200) -> tuple[int, int]:
    """POST the first `count` requests one by one: (acknowledged, mean TwiML size in bytes)."""
    sizes = []
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for line in requests_file.read_text(encoding="utf-8").splitlines()[:count]:
            signature, body = line.split("\t", 1)
            response = client.post("/webhooks/twilio/sms", content=body.encode(), headers={
                "Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": signature})
            if response.status_code != 200:
                raise RuntimeError(f"optflow answered {response.status_code} to a valid webhook: {response.text}")
            sizes.append(len(response.content))
    return len(sizes), round(statistics.mean(sizes))


def _load(run: Run, server: ServerProcess, requests_file: Path, duration: float) -> LoadResult:
    return run_load(server.base_url, requests_file, connections=run.settings.connections, duration=duration,
                    wrk=run.wrk)


@dataclass
class InboundRun:
    dataset: ds.Dataset
    load: LoadResult
    warmup: LoadResult
    reply_bytes: int
    acknowledged: int
    stored: int
    ledger_chain_problems: int
    rss_mb_peak: float
    rss_mb_after: float
    worker_processes: int

    @property
    def durable(self) -> bool:
        """Every acknowledged message is in the database after a SIGKILL (each request file line
        is a distinct MessageSid, so this is exact unless the load ran out of lines), and the
        ledger's hash chain is intact after two workers appended to it concurrently."""
        return (self.stored >= self.acknowledged and self.load.wrapped == 0 and self.warmup.wrapped == 0
                and self.ledger_chain_problems == 0)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": ds.describe(self.dataset), "load": self.load.as_dict(), "warmup": self.warmup.as_dict(),
                "reply_bytes": self.reply_bytes, "acknowledged": self.acknowledged, "stored": self.stored,
                "durable": self.durable, "ledger_chain_problems": self.ledger_chain_problems,
                "rss_mb_peak": self.rss_mb_peak, "rss_mb_after": self.rss_mb_after,
                "worker_processes": self.worker_processes}


def inbound_under_load(run: Run, dataset: ds.Dataset, label: str) -> InboundRun:
    """Start optflow on a fresh copy of `dataset`, load it, SIGKILL it, and check what it
    acknowledged against what the database holds."""
    settings = run.settings
    database_url = run.fresh_database(dataset, f"inbound_{label}")
    server = start_optflow(run, database_url, f"optflow-{label}")
    try:
        url = server.base_url + "/webhooks/twilio/sms"
        files = {}
        for part, count in (("sample", 200), ("warmup", int(MAX_RATE * settings.warmup * 1.5)),
                            ("main", int(MAX_RATE * settings.duration * 1.5))):
            files[part] = run.work / f"requests-{label}-{part}.txt"
            write_requests(files[part], url, count, dataset.traffic_contacts,
                           seed=zlib.crc32(files[part].name.encode()), sid_prefix=f"{label[:2]}{part[0]}")
        sampled, reply_bytes = sample_replies(server, files["sample"])
        warmup = _load(run, server, files["warmup"], settings.warmup)
        with server.sampling_rss():
            main = _load(run, server, files["main"], settings.duration)
        rss_after = server.workers_rss_mb()
        workers = len(server.workers())
    finally:
        server.kill()  # as a crash would: nothing gets flushed on the way out
    stored, chain_problems = _stored_inbound(database_url, dataset.ledger_entries)
    result = InboundRun(dataset, main, warmup, reply_bytes, sampled + warmup.ok + main.ok, stored, chain_problems,
                        server.peak_rss_mb, rss_after, workers)
    run.inbound_runs[label] = result
    run.log(f"  {label}: {main.rate:,.0f} msg/s, p50 {main.p50_ms:.1f} ms, p99 {main.p99_ms:.1f} ms, "
            f"{main.status_errors} errors; acknowledged {result.acknowledged:,}, stored {stored:,}; "
            f"workers' RSS {server.peak_rss_mb:.0f} MB peak")
    return result


def _stored_inbound(database_url: str, history: int) -> tuple[int, int]:
    """Inbound messages in the database, and problems in the ledger entries appended after the
    dataset's `history` (the part two workers wrote concurrently; the rest was checked when built)."""
    engine = db.make_engine(database_url)
    keyring = ledger_files.load_or_create(Config.from_env(database_url=database_url), engine).keyring  # the server's
    try:
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(orm.messages)
                                  .where(orm.messages.c.direction == "in")).scalar_one()
            entries = conn.execute(select(orm.ledger).where(orm.ledger.c.org_id == 1, orm.ledger.c.seq >= history)
                                   .order_by(orm.ledger.c.seq)).mappings()
            head = conn.execute(select(orm.ledger_heads).where(orm.ledger_heads.c.org_id == 1)).mappings().one()
            problems, previous = 0, None
            for entry in entries:
                linked = previous is None or (entry["seq"] == previous["seq"] + 1
                                              and entry["prev_hash"] == previous["hash"])
                key = keyring.get(entry["key_id"]) if entry["key_id"] is not None else None
                if not linked or (entry["key_id"] is not None and key is None) \
                        or entry_hash(entry["prev_hash"], dict(entry), key) != entry["hash"]:
                    problems += 1
                previous = entry
            if previous is None or (head["seq"], head["hash"]) != (previous["seq"], previous["hash"]):
                problems += 1
        return int(stored), problems
    finally:
        engine.dispose()


def inbound(run: Run) -> None:
    """optflow vs the bare-Sanic ceiling, same workers, same connections, same request file."""
    run.log(f"inbound: {run.settings.connections} connections, {run.settings.duration:.0f} s, "
            f"{run.settings.workers} workers, {run.kind}")
    optflow = inbound_under_load(run, run.settings.small, "10k")
    ceiling_server = start_ceiling(run, optflow.reply_bytes)
    try:
        requests_file = run.work / "requests-10k-main.txt"
        _load(run, ceiling_server, requests_file, run.settings.warmup)
        with ceiling_server.sampling_rss():
            ceiling = _load(run, ceiling_server, requests_file, run.settings.duration)
    finally:
        ceiling_server.stop()
    run.log(f"  ceiling: {ceiling.rate:,.0f} req/s, p50 {ceiling.p50_ms:.1f} ms, p99 {ceiling.p99_ms:.1f} ms; "
            f"workers' RSS {ceiling_server.peak_rss_mb:.0f} MB peak")
    run.report.details["inbound"] = {"optflow": optflow.as_dict(),
                                     "ceiling": {"load": ceiling.as_dict(), "rss_mb_peak": ceiling_server.peak_rss_mb}}
    main = optflow.load
    target_rate = 0.40 if run.postgres_url else 0.50
    label = "bare Sanic"
    run.report.add(Figure("inbound", "messages/s", main.rate, "msg/s", ceiling.rate, label, True,
                          f">= {target_rate:.0%} of ceiling", main.rate >= target_rate * ceiling.rate))
    run.report.add(Figure("inbound", "p50 latency", main.p50_ms, "ms", ceiling.p50_ms, label, False))
    run.report.add(Figure("inbound", "p99 latency", main.p99_ms, "ms", ceiling.p99_ms, label, False,
                          "< 50 ms", main.p99_ms < 50))
    run.report.add(Figure("inbound", "stored after SIGKILL", optflow.stored, "msgs", optflow.acknowledged,
                          "acknowledged", True, "every ack stored, chain intact", optflow.durable))
    run.report.add(Figure("inbound", "workers' RSS", optflow.rss_mb_peak, "MB", ceiling_server.peak_rss_mb,
                          label, False))


def scale(run: Run) -> None:
    """The inbound load on 1M contacts and 10M ledger entries, against the 10k run as ceiling."""
    if "10k" not in run.inbound_runs:
        inbound_under_load(run, run.settings.small, "10k")
    small, large = run.inbound_runs["10k"], run.settings.large
    run.log(f"scale: {large.contacts:,} contacts, {large.ledger_entries:,} ledger entries")
    big = inbound_under_load(run, large, "1m")
    run.report.details["scale"] = {"large": big.as_dict()}
    at = f"at {large.contacts:,} contacts"
    ceiling = f"at {small.dataset.contacts:,}"
    run.report.add(Figure("scale", f"workers' RSS {at}", big.rss_mb_peak, "MB", small.rss_mb_peak, ceiling, False,
                          "within 10%", big.rss_mb_peak <= small.rss_mb_peak * 1.10))
    run.report.add(Figure("scale", f"p50 latency {at}", big.load.p50_ms, "ms", small.load.p50_ms, ceiling, False))
    run.report.add(Figure("scale", f"p99 latency {at}", big.load.p99_ms, "ms", small.load.p99_ms, ceiling, False))
    run.report.add(Figure("scale", f"messages/s {at}", big.load.rate, "msg/s", small.load.rate, ceiling, True))
    run.report.add(Figure("scale", f"stored after SIGKILL {at}", big.stored, "msgs", big.acknowledged,
                          "acknowledged", True, "every ack stored, chain intact", big.durable))


# ------------------------------------------------------------------------------------- in-process

@contextlib.contextmanager
def in_process(database_url: str, flows_dir: Path, *, as_web_worker: bool = False) -> Iterator[System]:
    """optflow in this process; `as_web_worker`: its database set up as `optflow serve`'s web
    workers have it (on SQLite, the log checkpointed by a thread rather than by commits). The
    scheduler, which runs flows, keeps SQLite's own checkpoints."""
    engine, checkpointer = db.make_web_worker_engine(database_url) if as_web_worker else (None, None)
    system = bootstrap(Config(database_url=database_url, flows_dir=flows_dir, secret="bench-secret",
                              pin_key="bench-pin-key-" + "0" * 32), create_schema=False, engine=engine)
    try:
        yield system
    finally:
        if checkpointer is not None:
            checkpointer.stop()
        system.close()


def fanout_flows(run: Run) -> Path:
    target = run.work / "fanout-flows"
    flows_directory(target, ds.BENCH_FLOWS_DIR)
    for n in range(FANOUT_FLOWS):
        (target / f"fanout_{n:02d}.yaml").write_text(
            f"name: fanout_{n:02d}\ndescription: Fan-out benchmark flow {n}.\ntrigger:\n  event: bench.fanout_{n:02d}\n"
            "purpose: marketing\nreenroll: always\nsteps:\n  - wait: 1d\n"
            "  - send: {channel: text, template: bench_note}\n", encoding="utf-8")
    return target


def fanout(run: Run) -> None:
    """STOP from a contact enrolled in 50 flows: its cost at 10k and at 1M contacts. The two
    databases are open side by side and the STOPs alternate between them, so the machine's
    drifting load (it is shared) weighs on both sizes alike."""
    run.log(f"fan-out: STOP from a contact enrolled in {FANOUT_FLOWS} flows")
    flows_dir = fanout_flows(run)
    sizes = (run.settings.small, run.settings.large)
    with contextlib.ExitStack() as stack:
        systems = [stack.enter_context(in_process(run.fresh_database(dataset, "fanout"), flows_dir,
                                                  as_web_worker=True)) for dataset in sizes]
        contacts = {dataset.name: dataset.reserved(2 * FANOUT_CONTACTS + 1) for dataset in sizes}
        for dataset, system in zip(sizes, systems, strict=True):
            _enroll_everywhere(system, contacts[dataset.name])
            # The first STOP after opening a freshly copied database pays for reading it from disk.
            _stop(system, contacts[dataset.name][0], "warm")
        optflow_ms: dict[str, list[float]] = {dataset.name: [] for dataset in sizes}
        plain_ms: dict[str, list[float]] = {dataset.name: [] for dataset in sizes}
        for i in range(FANOUT_CONTACTS):
            for dataset, system in zip(sizes, systems, strict=True):
                optflow_ms[dataset.name].append(_stop(system, contacts[dataset.name][1 + i], f"{i}"))
            for dataset, system in zip(sizes, systems, strict=True):
                plain_ms[dataset.name].append(
                    _plain_opt_out(system.engine, contacts[dataset.name][1 + FANOUT_CONTACTS + i], i))
        for dataset, system in zip(sizes, systems, strict=True):
            _check_cancelled(system, contacts[dataset.name][1:FANOUT_CONTACTS + 1])
    results: dict[str, dict[str, Any]] = {}
    for dataset in sizes:
        mine, plain = optflow_ms[dataset.name], plain_ms[dataset.name]
        results[dataset.name] = {"contacts": dataset.contacts, "optflow_ms": mine, "plain_ms": plain,
                                 "optflow_median_ms": statistics.median(mine),
                                 "plain_median_ms": statistics.median(plain)}
        run.log(f"  {dataset.contacts:,} contacts: median {statistics.median(mine):.1f} ms "
                f"(plain SQL {statistics.median(plain):.1f} ms)")
    run.report.details["fanout"] = results
    small, large = results[run.settings.small.name], results[run.settings.large.name]
    for dataset, result in ((run.settings.small, small), (run.settings.large, large)):
        run.report.add(Figure("opt-out fan-out", f"STOP, {FANOUT_FLOWS} flows, {dataset.contacts:,} contacts",
                              result["optflow_median_ms"], "ms", result["plain_median_ms"], "plain SQL", False))
    run.report.add(Figure("opt-out fan-out", f"flatness {run.settings.large.contacts:,} vs "
                                             f"{run.settings.small.contacts:,} contacts",
                          large["optflow_median_ms"], "ms", small["optflow_median_ms"],
                          f"at {run.settings.small.contacts:,}", False, "within 10%",
                          large["optflow_median_ms"] <= small["optflow_median_ms"] * 1.10))


def _stop(system: System, contact: int, label: str) -> float:
    """A STOP from `contact` through the message bus; how long it took, in ms."""
    started = time.perf_counter()
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, ds.contact_number(contact), ds.ORG_NUMBER, "STOP",
                                       provider_id=f"SMfanout{label:>026}"))
    return (time.perf_counter() - started) * 1000


def _enroll_everywhere(system: System, contacts: list[int]) -> None:
    now = datetime.now(UTC)
    with system.bus.uow() as uow:
        for flow in system.flows.flows.values():
            source = Path(flow.source_file).read_text(encoding="utf-8")
            uow.enrollments.remember_version(flow.name, flow.version, flow.source_file, source, now)
        uow.commit()
    rows = [{"org_id": 1, "contact_id": contact, "flow_name": flow.name, "flow_version": flow.version, "pc": 0,
             "status": "active", "next_run_at": ds.IDLE_UNTIL, "event_json": "{}", "started_at": now}
            for contact in contacts for flow in system.flows.flows.values() if flow.name.startswith("fanout_")]
    with system.engine.begin() as conn:
        conn.execute(insert(orm.enrollments), rows)


def _check_cancelled(system: System, contacts: list[int]) -> None:
    with system.engine.connect() as conn:
        still_active = conn.execute(select(func.count()).select_from(orm.enrollments).where(
            orm.enrollments.c.contact_id.in_(contacts), orm.enrollments.c.status == "active")).scalar_one()
    with system.bus.uow() as uow:
        states = {uow.consents.get(1, ds.contact_number(contact), Channel.TEXT).state for contact in contacts}
    if still_active or states != {State.OPTED_OUT}:
        raise AssertionError(f"fan-out left {still_active} enrolments active; consent states {states}")


def _plain_opt_out(engine: Engine, contact: int, n: int) -> float:
    """The rows a STOP with 51 enrolments has to write, in plain SQL through the same driver:
    the inbound message, the consent, a ledger entry and its head, the enrolments, their history."""
    number = ds.contact_number(contact)
    now = datetime.now(UTC)
    stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    started = time.perf_counter()
    with engine.begin() as conn:
        raw: Any = conn.connection.driver_connection
        cursor = raw.cursor()
        p = "?" if db.is_sqlite(engine) else "%s"
        cursor.execute(f"INSERT INTO messages (org_id, contact_id, direction, audience, channel, address, body, "
                       f"purpose, kind, status, intent, provider_id, attempts, created_at) VALUES "
                       f"(1, {p}, 'in', 'customer', 'text', {p}, 'STOP', 'conversational', 'normal', 'delivered', "
                       f"'opt_out', {p}, 0, {p})", (contact, number, f"SMplain{n:027d}", stamp))
        cursor.execute(f"UPDATE consents SET state = 'opted_out', opted_out_at = {p}, updated_at = {p} "
                       f"WHERE org_id = 1 AND address = {p} AND channel = 'text'", (stamp, stamp, number))
        cursor.execute("SELECT seq, hash FROM ledger_heads WHERE org_id = 1")
        seq, head = cursor.fetchone()
        entry = {"org_id": 1, "seq": seq + 1, "contact_id": contact, "channel": "text", "address": number,
                 "from_state": "opted_in", "to_state": "opted_out", "trigger": "opt_out", "method": "keyword",
                 "actor_kind": "customer", "actor_id": number, "source_message_id": None, "evidence": None,
                 "occurred_at": now, "recorded_at": now}
        digest = entry_hash(head, entry)
        cursor.execute(f"INSERT INTO ledger (org_id, seq, contact_id, channel, address, from_state, to_state, trigger, "
                       f"method, actor_kind, actor_id, occurred_at, recorded_at, prev_hash, hash) VALUES "
                       f"(1, {p}, {p}, 'text', {p}, 'opted_in', 'opted_out', 'opt_out', 'keyword', 'customer', {p}, "
                       f"{p}, {p}, {p}, {p})", (seq + 1, contact, number, number, stamp, stamp, head, digest))
        cursor.execute(f"UPDATE ledger_heads SET seq = {p}, hash = {p} WHERE org_id = 1", (seq + 1, digest))
        cursor.execute(f"SELECT id, pc FROM enrollments WHERE contact_id = {p} AND status IN ('active', 'paused')",
                       (contact,))
        enrolments = cursor.fetchall()
        cursor.execute(f"UPDATE enrollments SET status = 'cancelled', ended_at = {p}, end_reason = 'opted out' "
                       f"WHERE contact_id = {p} AND status IN ('active', 'paused')", (stamp, contact))
        cursor.executemany(f"INSERT INTO enrollment_steps (enrollment_id, pc, step, outcome, at) VALUES "
                           f"({p}, {p}, 'cancelled', 'opted out', {p})", [(e, pc, stamp) for e, pc in enrolments])
    return (time.perf_counter() - started) * 1000


def dispatch(run: Run) -> None:
    """Every due enrolment decided, rendered and queued: `FlowEngine.run_due` vs plain inserts."""
    dataset = run.settings.dispatch
    run.log(f"dispatch: {dataset.due_enrollments:,} enrolments due at once")
    flows_dir = flows_directory(run.work / "dispatch-flows", ds.BENCH_FLOWS_DIR)
    database_url = run.fresh_database(dataset, "dispatch")
    with in_process(database_url, flows_dir) as system:
        now = datetime.now(UTC)
        started = time.perf_counter()
        flow_report = system.flows.run_due(system.uows, now, batch=DISPATCH_BATCH)
        elapsed = time.perf_counter() - started
        with system.engine.connect() as conn:
            queued = conn.execute(select(func.count()).select_from(orm.messages).where(
                orm.messages.c.status == "queued", orm.messages.c.enrollment_id.is_not(None))).scalar_one()
            sample = conn.execute(select(orm.messages).where(orm.messages.c.enrollment_id.is_not(None)).limit(1)) \
                .mappings().first()
    if queued != dataset.due_enrollments or sample is None:
        raise AssertionError(f"run_due queued {queued} messages for {dataset.due_enrollments} due enrolments "
                             f"({flow_report})")
    run.log(f"  run_due: {elapsed:.1f} s ({queued / elapsed:,.0f} enrolments/s), {flow_report.sent:,} queued")
    ceiling_url = run.fresh_database(dataset, "dispatch_ceiling")
    ceiling = _plain_outbox_inserts(ceiling_url, dict(sample), dataset.due_enrollments)
    run.log(f"  plain batched inserts: {ceiling:.2f} s ({dataset.due_enrollments / ceiling:,.0f} rows/s)")
    run.report.details["dispatch"] = {"dataset": ds.describe(dataset), "seconds": elapsed, "queued": queued,
                                      "ceiling_seconds": ceiling, "report": flow_report.__dict__}
    run.report.add(Figure("dispatch", f"{dataset.due_enrollments:,} due enrolments to the outbox", elapsed, "s",
                          ceiling, "plain batched inserts", False, ">= 25% of ceiling", ceiling / elapsed >= 0.25))


def _plain_outbox_inserts(database_url: str, sample: dict[str, Any], count: int) -> float:
    """`count` outbox rows like `sample`, inserted with the driver's executemany, one transaction
    per `DISPATCH_BATCH` rows, as run_due's transactions are."""
    engine = db.make_engine(database_url)
    columns = [name for name in sample if name != "id"]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    try:
        p = "?" if db.is_sqlite(engine) else "%s"
        sql = f"INSERT INTO messages ({', '.join(columns)}) VALUES ({', '.join(p for _ in columns)})"
        rows = []
        for n in range(count):
            values = {**sample, "contact_id": n + 1, "address": ds.contact_number(n + 1), "enrollment_id": n + 1,
                      "created_at": stamp, "not_before": stamp}
            rows.append(tuple(values[name] for name in columns))
        started = time.perf_counter()
        for first in range(0, count, DISPATCH_BATCH):
            with engine.begin() as conn:
                driver: Any = conn.connection.driver_connection
                cursor = driver.cursor()
                cursor.executemany(sql, rows[first:first + DISPATCH_BATCH])
        return time.perf_counter() - started
    finally:
        engine.dispose()


SCENARIOS: dict[str, Callable[[Run], None]] = {
    "inbound": inbound, "scale": scale, "fanout": fanout, "dispatch": dispatch, "classifier": classifier,
}
