"""Two dispatcher processes on one PostgreSQL database share the due enrolments.

`FlowEngine.run_due` claims due enrolments in batches with `FOR UPDATE SKIP LOCKED`, so any number
of processes may run it at once: each enrolment's due step must run exactly once. A few thousand
due enrolments are inserted in bulk, two real processes are released at the same instant, and
afterwards every enrolment has exactly one outbox row and no step twice in its history.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, insert, select, text

from conftest import postgres_url_or_skip
from optflow.adapters import db, orm
from optflow.bootstrap import bootstrap
from optflow.config import Config
from optflow.service_layer import admin

FLOWS = Path(__file__).resolve().parents[1] / "fixtures" / "flows_claims"
ENROLLED = 2000
BATCH = 100
NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)  # 13:00 in New York: inside quiet hours' window
WORKERS = 2

# One dispatcher process: build the system, say "ready", wait for "go", run the flows once,
# print its report as JSON.
WORKER = """
import json, sys
from datetime import datetime
from pathlib import Path
from optflow.bootstrap import bootstrap
from optflow.config import Config

url, flows_dir, now, batch = sys.argv[1], Path(sys.argv[2]), datetime.fromisoformat(sys.argv[3]), int(sys.argv[4])
system = bootstrap(Config(database_url=url, flows_dir=flows_dir, secret="test-secret", pin_key="k" * 32),
                   create_schema=False, clock=lambda: now)
print("ready", flush=True)
sys.stdin.readline()
report = system.flows.run_due(system.uows, now, batch=batch)
print(json.dumps({"enrollments": report.enrollments, "sent": report.sent, "errors": report.errors}), flush=True)
system.close()
"""


@pytest.fixture
def postgres() -> Iterator[tuple[str, Engine]]:
    url = postgres_url_or_skip()
    engine = db.make_engine(url)
    db.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(t.name for t in orm.metadata.sorted_tables)} "
                          "RESTART IDENTITY CASCADE"))
    yield url, engine
    engine.dispose()


def enrol_in_bulk(engine: Engine, url: str) -> str:
    """An org in disclaimer mode (transactional texts need no opt-in), ENROLLED contacts in New
    York with a phone each, and one due enrolment per contact. Returns the flow's version."""
    system = bootstrap(Config(database_url=url, flows_dir=FLOWS, secret="test-secret", pin_key="k" * 32),
                       engine=engine, create_schema=False, clock=lambda: NOW)
    with system.bus.uow() as uow:
        org = admin.create_org(uow, "Bulk", NOW, settings={"modes": {"text": "disclaimer"}})
        uow.commit()
    version = system.flows.flows["bulk_reminder"].version
    ids = range(1, ENROLLED + 1)
    with engine.begin() as conn:
        conn.execute(insert(orm.contacts), [
            {"id": i, "org_id": org, "name": f"Contact {i}", "time_zone": "America/New_York", "region": None,
             "fields_json": "{}", "active": True, "do_not_call": False, "marketing_allowed": True,
             "dnd_all": False, "dnd_channels": "", "created_at": NOW, "updated_at": NOW} for i in ids])
        conn.execute(insert(orm.addresses), [
            {"org_id": org, "contact_id": i, "kind": "phone", "value": f"+1212{7000000 + i}"} for i in ids])
        conn.execute(insert(orm.enrollments), [
            {"org_id": org, "contact_id": i, "flow_name": "bulk_reminder", "flow_version": version, "pc": 0,
             "status": "active", "next_run_at": NOW - timedelta(minutes=i % 7), "event_json": "{}",
             "started_at": NOW - timedelta(minutes=10)} for i in ids])
    return version


def run_dispatchers(url: str) -> list[dict[str, object]]:
    processes = [
        subprocess.Popen([sys.executable, "-c", WORKER, url, str(FLOWS), NOW.isoformat(), str(BATCH)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(WORKERS)
    ]
    try:
        for process in processes:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "ready", process.stderr and process.stderr.read()
        for process in processes:  # released together, as close to the same instant as we can
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=60) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]


def test_two_dispatcher_processes_run_each_due_step_exactly_once(postgres: tuple[str, Engine]) -> None:
    url, engine = postgres
    enrol_in_bulk(engine, url)

    reports = run_dispatchers(url)

    with engine.connect() as conn:
        per_enrollment = conn.execute(
            select(orm.messages.c.enrollment_id, func.count())
            .where(orm.messages.c.enrollment_id.is_not(None))
            .group_by(orm.messages.c.enrollment_id)).all()
        repeated_steps = conn.execute(
            select(orm.enrollment_steps.c.enrollment_id, orm.enrollment_steps.c.pc, func.count())
            .group_by(orm.enrollment_steps.c.enrollment_id, orm.enrollment_steps.c.pc)
            .having(func.count() > 1)).all()
        positions = conn.execute(
            select(orm.enrollments.c.status, orm.enrollments.c.pc, orm.enrollments.c.next_run_at, func.count())
            .group_by(orm.enrollments.c.status, orm.enrollments.c.pc, orm.enrollments.c.next_run_at)).all()
        first_steps = conn.execute(select(func.count()).select_from(orm.enrollment_steps)
                                   .where(orm.enrollment_steps.c.step == "first_reminder")).scalar()
    assert len(per_enrollment) == ENROLLED
    assert {count for _, count in per_enrollment} == {1}, "an enrolment's first text was queued twice"
    assert repeated_steps == []
    assert first_steps == ENROLLED
    assert positions == [("active", 2, NOW + timedelta(days=1), ENROLLED)], "each now waits a day for the next"
    assert [report["errors"] for report in reports] == [[]] * WORKERS
    assert sum(int(str(report["enrollments"])) for report in reports) == ENROLLED, "claimed twice"
    assert all(int(str(report["enrollments"])) > 0 for report in reports), f"one process did all the work: {reports}"
