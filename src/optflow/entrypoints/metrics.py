"""Prometheus metrics at `/metrics`.

Two sources, each chosen for being exact:

- What the system did (messages in and out, consent transitions, policy denials) is counted
  from the database at scrape time. Every process writes there (web workers, the scheduler,
  `optflow run-due`, other nodes), the rows survive restarts, and nothing has to be
  instrumented in the service layer. The counters only grow because those rows are never
  deleted and a message never leaves a final status. The cost is a few grouped counts per
  scrape (a full scan of `messages` and `ledger`), see docs/twilio.md.
- How the webhooks behave (latency, status codes) is measured in the web workers with
  `prometheus_client`, as are template renders that fell back (`optflow_template_fallback_total`,
  counted by the renderer in `adapters/templates.py`). Under `optflow serve` every worker is
  its own process, so the client's multiprocess mode is used: `serve` points
  `PROMETHEUS_MULTIPROC_DIR` at a fresh directory before the workers start
  (`multiprocess_directory`), each worker writes its samples there, and any worker answering a
  scrape sums all of them.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse
from sanic_ext import openapi
from sqlalchemy import Engine, Select, and_, func, select

from ..adapters import orm
from ..adapters.templates import template_fallback_counter
from ..domain.ledger import DAMAGE_TRIGGER
from ..domain.model import Trigger
from ..domain.records import Audience, Direction, MessageStatus

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
OUTBOUND_DONE = (MessageStatus.SENT, MessageStatus.REPLIED)  # statuses of a message that reached the customer
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class DatabaseCollector(Collector):
    """Counters computed from the messages and the ledger on every scrape."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self._engine = engine  # resolved at scrape time: the system is built after the app

    def collect(self) -> Iterable[Metric]:
        m = orm.messages
        ledger = orm.ledger
        received, sent, denied, ledger_rows = _read_counts(self._engine(), [
            select(m.c.channel, m.c.intent, func.count()).where(m.c.direction == Direction.IN)
            .group_by(m.c.channel, m.c.intent),
            select(m.c.channel, m.c.kind, func.count())
            .where(and_(m.c.direction == Direction.OUT, m.c.audience == Audience.CUSTOMER,
                        m.c.status.in_(OUTBOUND_DONE)))
            .group_by(m.c.channel, m.c.kind),
            select(m.c.channel, m.c.kind, func.count())
            .where(and_(m.c.direction == Direction.OUT, m.c.status == MessageStatus.DENIED))
            .group_by(m.c.channel, m.c.kind),
            # One scan of the ledger for both the transitions and the damage it recorded.
            select(ledger.c.trigger, ledger.c.channel, ledger.c.method, func.count())
            .where(ledger.c.trigger.in_([*(t.value for t in Trigger), DAMAGE_TRIGGER]))
            .group_by(ledger.c.trigger, ledger.c.channel, ledger.c.method),
        ])
        transitions: dict[tuple[str, str], int] = {}
        damage: dict[tuple[str], int] = {}
        for trigger, channel, method, count in ledger_rows:
            if trigger == DAMAGE_TRIGGER:
                damage[(method,)] = damage.get((method,), 0) + count
            else:
                transitions[(trigger, channel)] = transitions.get((trigger, channel), 0) + count
        yield _counter("optflow_messages_received", "Inbound messages by channel and intent.",
                       ("channel", "intent"), received)
        yield _counter("optflow_messages_sent", "Messages that reached a customer (delivered by a sender or "
                       "answered in a webhook reply), by channel and kind.", ("channel", "kind"), sent)
        yield _counter("optflow_policy_denials", "Outbound messages the send policy refused, by channel and kind.",
                       ("channel", "kind"), denied)
        yield _counter("optflow_consent_transitions", "Consent machine transitions in the ledger, by trigger "
                       "and channel.", ("trigger", "channel"), ((*k, n) for k, n in transitions.items()))
        yield _counter("optflow_ledger_damage", "Damage the ledger found in its own chain while writing (head row "
                       "missing or behind), by kind; each is an entry `optflow ledger verify` reports.", ("kind",),
                       ((*k, n) for k, n in damage.items()))


def _read_counts(engine: Engine, queries: list[Select[Any]]) -> list[list[tuple[Any, ...]]]:
    """Run read-only scans on the driver's own connection.

    The engine opens every SQLAlchemy transaction on SQLite with BEGIN IMMEDIATE, the write
    lock, and these scans take ~0.7 s at a million messages: through the engine a scrape would
    stall every inbound write that long. The raw connection runs in the driver's autocommit
    mode there, where WAL serves each SELECT from a snapshot without blocking writers. The
    statements hold only constants, so they are compiled with their values inline.
    """
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        results = []
        for query in queries:
            cursor.execute(str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True})))
            results.append([tuple(row) for row in cursor.fetchall()])
        cursor.close()
        raw.rollback()  # ends the read transaction drivers such as psycopg open implicitly
        return results
    finally:
        raw.close()


def _counter(name: str, documentation: str, labels: tuple[str, ...], rows: Iterable[Any]) -> CounterMetricFamily:
    family = CounterMetricFamily(name, documentation, labels=list(labels))
    for *values, count in rows:
        family.add_metric([str(v) if v is not None else "none" for v in values], count)
    return family


class ServerMetrics:
    """The metrics of one web worker: the registry a scrape renders, and the webhook timings."""

    def __init__(self, engine: Callable[[], Engine]) -> None:
        self.registry = CollectorRegistry()
        multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        if multiprocess:
            MultiProcessCollector(self.registry)
        # In multiprocess mode samples go to files that MultiProcessCollector reads back; registering
        # the live objects as well would count this worker twice.
        own = None if multiprocess else self.registry
        self.latency = Histogram("optflow_webhook_duration_seconds", "Time to answer an inbound webhook.",
                                 ("route",), buckets=LATENCY_BUCKETS, registry=own)
        self.requests = Counter("optflow_webhook_requests", "Inbound webhook requests by route and status.",
                                ("route", "status"), registry=own)
        if own is not None:
            own.register(template_fallback_counter())
        self.registry.register(DatabaseCollector(engine))

    def webhook_answered(self, route: str, status: int, seconds: float) -> None:
        self.latency.labels(route).observe(seconds)
        self.requests.labels(route, str(status)).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def metrics_blueprint() -> Blueprint:
    bp = Blueprint("metrics")

    @bp.before_server_start
    async def start_metrics(app: Sanic, _: Any = None) -> None:
        app.ctx.metrics = ServerMetrics(lambda: app.ctx.system.engine)

    @bp.get("/metrics", name="metrics")
    @openapi.exclude()
    async def metrics(request: Request) -> HTTPResponse:
        """Prometheus text exposition format. Rendered in a thread: the database counts must not
        hold up the webhooks this worker is serving."""
        body = await asyncio.get_running_loop().run_in_executor(None, request.app.ctx.metrics.exposition)
        return HTTPResponse(body, content_type=CONTENT_TYPE_LATEST)

    return bp


@contextmanager
def multiprocess_directory() -> Iterator[str]:
    """Turn on prometheus_client's multiprocess mode for the processes started inside.

    Must run before the web workers start. Sanic spawns them as fresh interpreters, and
    prometheus_client picks its storage from the environment when a worker imports it. A
    directory the operator set in the environment is used as it is; otherwise a fresh one is
    made, and removed when the server stops.
    """
    configured = os.environ.get(MULTIPROC_ENV)
    if configured:
        yield configured
        return
    directory = tempfile.mkdtemp(prefix="optflow-metrics-")
    os.environ[MULTIPROC_ENV] = directory
    try:
        yield directory
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)
