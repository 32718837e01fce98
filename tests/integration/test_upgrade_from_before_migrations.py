"""The upgrade an operator of the last optflow without migrations makes: the old code (commit
984b0ec, taken from git) creates and fills a database through its own CLI — contacts, consents
on several channels and in several states, the ledger, flow enrolments, queued messages — and
today's `optflow db upgrade` adopts it with every row, every state and an intact ledger.

Runs on a full clone (CI clones main with its history). Without git or that commit it fails in CI
and skips elsewhere."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, select

from scratch_databases import empty_databases

REPO = Path(__file__).resolve().parents[2]
BEFORE_MIGRATIONS = "984b0ecd76ee89f5c477696e8bd147530e0fdf66"  # the last commit without migrations

# Run by the old code's Python: each command goes through its real click CLI, in one process.
FILL = '''
import json, sys
from click.testing import CliRunner
import optflow
from optflow.entrypoints.cli import main

assert optflow.__file__.startswith(sys.argv[1]), f"not the old code: {optflow.__file__}"
runner = CliRunner()
for args in json.loads(sys.argv[2]):
    result = runner.invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, (args, result.output)
    print("$ optflow", " ".join(args), "\\n" + result.output, end="")
'''

COMMANDS = [
    ["init", "--org-name", "Before Migrations Ltd"],
    ["contacts", "add", "--name", "Sam", "--phone", "+14155552671", "--email", "sam@example.com"],
    ["contacts", "add", "--name", "Ana", "--phone", "+14155552672", "--email", "ana@example.com"],
    ["contacts", "add", "--name", "Lee", "--phone", "+14155552673"],
    ["consent", "record", "1", "--channel", "text", "--method", "paper_form", "--at", "2026-11-01T10:00:00Z",
     "--evidence", "form #7"],
    ["consent", "record", "1", "--channel", "email", "--method", "web_form"],
    ["consent", "opt-out", "1", "--channel", "email", "--evidence", "unsubscribe link"],
    ["consent", "request", "1", "--channel", "call"],
    ["consent", "request", "2", "--channel", "text"],
    ["consent", "record", "2", "--channel", "call", "--method", "verbal"],
    ["consent", "opt-out", "3", "--channel", "text"],
    ["consent", "dnd-on", "2", "--channel", "email"],
    ["consent", "marketing-off", "3"],
    ["flows", "enroll", "2", "welcome_drip"],
    ["flows", "enroll", "1", "payment_plan_opt_in"],
]

CONSENTS = {
    ("+14155552671", "text"): "opted_in", ("sam@example.com", "email"): "opted_out",
    ("+14155552671", "call"): "requested", ("+14155552672", "text"): "requested",
    ("+14155552672", "call"): "opted_in", ("+14155552673", "text"): "opted_out",
}


@pytest.fixture(scope="module")
def old_optflow(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `src`, `flows` and `message_templates` of optflow as of BEFORE_MIGRATIONS, extracted with `git archive`."""
    git = shutil.which("git")
    problem = None
    if git is None:
        problem = "git is not installed"
    elif subprocess.run([git, "-C", str(REPO), "cat-file", "-e", f"{BEFORE_MIGRATIONS}^{{commit}}"],
                        capture_output=True).returncode:
        problem = f"commit {BEFORE_MIGRATIONS} is not in the repository at {REPO} (a shallow clone?)"
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the upgrade from before migrations: {problem}")
        pytest.skip(problem)
    assert git is not None
    target = tmp_path_factory.mktemp("optflow-before-migrations")
    archive = subprocess.run([git, "-C", str(REPO), "archive", "--format=tar", BEFORE_MIGRATIONS, "src", "flows",
                              "message_templates"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    (target / "fill.py").write_text(FILL)
    return target


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with empty_databases(request.param, tmp_path, "before_migrations") as (url,):
        yield url


def snapshot(url: str) -> dict[str, list[dict[str, Any]]]:
    """Every row of every table but Alembic's, as stored, in primary-key order."""
    engine = create_engine(url)
    try:
        metadata = MetaData()
        metadata.reflect(engine)
        with engine.connect() as conn:
            return {name: [dict(row) for row in conn.execute(select(table).order_by(*table.primary_key)).mappings()]
                    for name, table in metadata.tables.items() if name != "alembic_version"}
    finally:
        engine.dispose()


def today(database_url: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Today's `optflow` command."""
    env = {**os.environ, "DATABASE_URL": database_url, "OPTFLOW_FLOWS_DIR": str(REPO / "flows")}
    return subprocess.run([sys.executable, "-m", "optflow", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120)


def test_a_database_of_optflow_before_migrations_upgrades_with_everything_kept(
        old_optflow: Path, database_url: str, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(old_optflow / "src"), os.environ.get("PYTHONPATH", "")]),
           "DATABASE_URL": database_url, "OPTFLOW_FLOWS_DIR": str(old_optflow / "flows")}
    filled = subprocess.run([sys.executable, str(old_optflow / "fill.py"), str(old_optflow / "src"),
                             json.dumps(COMMANDS)], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert filled.returncode == 0, filled.stdout + filled.stderr
    before = snapshot(database_url)
    assert "alembic_version" not in before
    assert {(row["address"], row["channel"]): row["state"] for row in before["consents"]} == CONSENTS
    assert {row["kind"] for row in before["messages"] if row["status"] == "queued"} >= {
        "opt_in_request", "opt_out_confirmation"}
    assert {(row["flow_name"], row["status"]) for row in before["enrollments"]} == {
        ("welcome_drip", "active"), ("payment_plan_opt_in", "done")}
    entries = len(before["ledger"])
    assert entries >= 8 and before["enrollment_steps"] and before["flow_versions"]

    refused = today(database_url, tmp_path, "ledger", "verify")
    assert refused.returncode == 1 and "run `optflow db upgrade`" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr + refused.stdout

    upgraded = today(database_url, tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert "upgraded from revision none (created before optflow had migrations) to " in upgraded.stdout
    assert "(head)" in upgraded.stdout

    after = snapshot(database_url)
    # Every row of every table, every value; later revisions only add columns and tables, which
    # start empty (NULL, or their default) on the old rows.
    kept = {name: [{column: row[column] for column in (rows[0] if rows else {})} for row in after[name]]
            for name, rows in before.items()}
    assert kept == before
    assert all(not after[name] for name in set(after) - set(before))
    verify = today(database_url, tmp_path, "ledger", "verify")
    assert verify.returncode == 0, verify.stderr
    assert f"org 1: {entries} entries, {entries} unkeyed (written before ledger keys)" in verify.stdout
    assert "ledger intact" in verify.stdout

