"""The periodic jobs, run by APScheduler 3.x in one process per node.

APScheduler holds no durable state here: it only ticks. What is due lives in optflow's own
tables (outbox rows, enrolments, consents), and each tick claims its batch from them, so any
number of nodes can run this safely and a restart loses nothing. Every job is also a plain
function of `now`, callable once from the CLI (`optflow run-due --at ...`).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apscheduler.schedulers.base import BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler

from ..bootstrap import System, bootstrap
from ..config import Config
from ..service_layer.dispatcher import DeliveryReport
from ..service_layer.flow_engine import FlowRunReport
from ..service_layer.imports import run_import_jobs
from ..service_layer.ledger_audit import CheckpointRun, write_checkpoints
from ..service_layer.sweeps import SweepReport, sweep_consents
from ..service_layer.webhook_dispatcher import WebhookDeliveryReport
from .logging_setup import configure_logging

log = logging.getLogger("optflow.scheduler")

OUTBOX_SECONDS = 2
FLOWS_SECONDS = 5
SWEEP_SECONDS = 300
CHECKPOINT_SECONDS = 300


@dataclass
class DueReport:
    sweep: SweepReport
    flows: FlowRunReport
    outbox: DeliveryReport
    webhooks: WebhookDeliveryReport
    checkpoints: CheckpointRun
    imports: int = 0  # API import jobs finished


def run_due(system: System, now: datetime) -> DueReport:
    """Every periodic job once, in the order that lets one pass finish the work: the clock
    sweep (may enrol contacts in reminder flows), the flows (may queue messages and webhooks),
    the outbox, the webhooks, then a checkpoint of the ledger's chains. The API's import jobs
    come first (an imported consent may release held messages)."""
    imports = run_import_jobs(system.bus, lambda: now, max_jobs=1_000)
    sweep = sweep_consents(system.uows, system.services, now)
    flows = system.flows.run_due(system.uows, now)
    outbox = system.dispatcher.run(now)
    webhooks = system.webhooks.run(now)
    return DueReport(sweep, flows, outbox, webhooks, write_checkpoints(system.uows, now), imports)


def _guarded(name: str, job: Any) -> Any:
    def run() -> None:
        try:
            job()
        except Exception:  # a failing tick must not stop the scheduler
            log.exception("periodic job %s failed", name)

    return run


def stopper(scheduler: BaseScheduler) -> Callable[..., None]:
    """The scheduler's SIGTERM and SIGINT handler. It may run twice: Ctrl-C signals every process
    of the terminal's process group, and `optflow serve` passes the signal on to the scheduler
    as well; the second finds the scheduler stopped (shutting it down again would raise)."""

    def stop(*_: object) -> None:
        if scheduler.running:
            scheduler.shutdown(wait=False)

    return stop


def run_scheduler(config: Config, stop_after: float | None = None) -> None:
    """Block running the periodic jobs until SIGTERM/SIGINT. Runs in a process of its own
    (`optflow worker`, or beside `optflow serve`'s web workers), whose logs are JSON lines."""
    configure_logging(json=True, level=config.log_level, log_bodies=config.log_bodies)
    system = bootstrap(config, create_schema=False)
    scheduler = BlockingScheduler(job_defaults={"coalesce": True, "max_instances": 1})
    clock = system.clock
    scheduler.add_job(_guarded("outbox", lambda: system.dispatcher.run(clock())), "interval",
                      seconds=OUTBOX_SECONDS, id="outbox")
    scheduler.add_job(_guarded("webhooks", lambda: system.webhooks.run(clock())), "interval",
                      seconds=OUTBOX_SECONDS, id="webhooks")
    scheduler.add_job(_guarded("flows", lambda: system.flows.run_due(system.uows, clock())), "interval",
                      seconds=FLOWS_SECONDS, id="flows")
    scheduler.add_job(_guarded("imports", lambda: run_import_jobs(system.bus, clock)), "interval",
                      seconds=FLOWS_SECONDS, id="imports")
    scheduler.add_job(_guarded("consent-clock", lambda: sweep_consents(system.uows, system.services, clock())),
                      "interval", seconds=SWEEP_SECONDS, id="consent-clock")
    scheduler.add_job(_guarded("ledger-checkpoint", lambda: write_checkpoints(system.uows, clock())),
                      "interval", seconds=CHECKPOINT_SECONDS, id="ledger-checkpoint")

    stop = stopper(scheduler)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    log.info("scheduler running: outbox and webhooks every %ss, flows every %ss, consent clock every %ss, ledger "
             "checkpoint every %ss", OUTBOX_SECONDS, FLOWS_SECONDS, SWEEP_SECONDS, CHECKPOINT_SECONDS)
    try:
        scheduler.start()
    finally:
        system.close()
