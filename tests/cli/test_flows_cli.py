"""`optflow flows ...` and `optflow run-due`.

`flows validate` runs as a user runs it: a real process in the repository, so the messages carry
the paths a person typed. The enrolment commands run in-process (click's runner) on a temporary
SQLite file, with the clock frozen: `flows enroll` reads the real clock, and a frozen one makes
each step's due moment known to the test.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from freezegun import freeze_time
from sqlalchemy import create_engine, func, select

from conftest import run_cli
from optflow.adapters import orm

REPO = Path(__file__).resolve().parents[2]
BROKEN = Path("tests/fixtures/broken_flows")  # relative to REPO, as a person would type it
FLOWS = REPO / "tests" / "fixtures" / "flows_claims"  # one manual flow: a text, a day's wait, a text
START = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)  # 13:00 in New York
SAM, LEE = "+12125550111", "+12125550122"

# A precise message for a sample of the broken files: file, line, step (and kind) and the problem.
PRECISE = [
    f"{BROKEN}/bad_duration.yaml:4: steps[0] (wait): cannot read '2 days' as a duration: write a number and a "
    "unit (30m, 2h, 3d, 1w) or ISO 8601 such as P3D or PT12H",
    f"{BROKEN}/duplicate_key.yaml:5: duplicate key 'wait' (YAML would silently keep only the last one)",
    f"{BROKEN}/missing_subject.yaml:4: steps[0] (send): an email needs a 'subject'",
    f"{BROKEN}/reserved_keyword.yaml:3: trigger: keyword 'STOP' is reserved: every inbound message like it is an "
    "opt-out, so a flow cannot start on it",
    f"{BROKEN}/several_errors.yaml:7: steps[1] (send): unknown channel 'sms' (did you mean 'text'?)",
    f"{BROKEN}/unknown_setting.yaml:3: unknown setting 'exit_whan' (did you mean 'exit_when'?)",
    f"{BROKEN}/unknown_step_type.yaml:5: steps[1]: unknown step type 'sned' (did you mean 'send'?)",
    f"{BROKEN}/unreachable_after_end.yaml:5: steps[1] (wait): unreachable: the flow has ended at steps[0] "
    "(remove_from_flows)",
]


@pytest.fixture(scope="module")
def validations() -> dict[str, subprocess.CompletedProcess[str]]:
    """`optflow flows validate PATH` for each path, the processes run side by side."""
    paths = [str(BROKEN), "flows", str(BROKEN / "unknown_step_type.yaml")]
    processes = {path: subprocess.Popen([sys.executable, "-m", "optflow", "flows", "validate", path], cwd=REPO,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for path in paths}
    results = {}
    for path, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        results[path] = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    return results


def test_validate_names_file_line_and_step_for_every_broken_flow(
        validations: dict[str, subprocess.CompletedProcess[str]]) -> None:
    run = validations[str(BROKEN)]
    assert run.returncode != 0 and run.stdout == ""
    assert "Traceback" not in run.stderr
    lines = run.stderr.splitlines()
    for file in sorted((REPO / BROKEN).glob("*.yaml")):
        where = re.compile(rf"{re.escape(str(BROKEN / file.name))}(:\d+)?: \S")
        assert any(where.match(line) for line in lines), f"nothing reported for {file.name}"
    for message in PRECISE:
        assert message in lines
    assert re.fullmatch(rf"Error: \d+ errors in {re.escape(str(BROKEN))}", lines[-1])


def test_validate_one_file(
        validations: dict[str, subprocess.CompletedProcess[str]]) -> None:
    one = validations[str(BROKEN / "unknown_step_type.yaml")]
    assert one.returncode != 0
    assert one.stderr.splitlines() == [
        f"{BROKEN}/unknown_step_type.yaml:5: steps[1]: unknown step type 'sned' (did you mean 'send'?)",
        f"Error: 1 error in {BROKEN}/unknown_step_type.yaml",
    ]


def test_validate_passes_on_the_shipped_flows(validations: dict[str, subprocess.CompletedProcess[str]]) -> None:
    run = validations["flows"]
    assert (run.returncode, run.stdout, run.stderr) == (0, "flows: all flows are valid\n", "")


# ---------------------------------------------------------------------- enrolments and run-due

Cli = Callable[..., Result]


@pytest.fixture
def cli(cli_on: Callable[[Path], Cli]) -> Iterator[Cli]:
    """Runs `optflow ARGS` on a fresh SQLite file with the fixture flows, the clock at START."""
    invoke = cli_on(FLOWS)
    with freeze_time(START, ignore=["_pytest.timing"]):
        assert invoke("init").exit_code == 0
        for phone in (SAM, LEE):
            assert invoke("contacts", "add", "--phone", phone, "--time-zone", "America/New_York").exit_code == 0
            assert invoke("consent", "record", phone, "--method", "paper_form").exit_code == 0
        yield invoke


def ok(result: Result) -> str:
    assert result.exit_code == 0, result.output
    return result.stdout


def refused(result: Result) -> str:
    assert result.exit_code != 0, result.output
    assert "Traceback" not in result.output
    return result.stderr


def test_enrol_list_and_run_due_at_chosen_moments(cli: Cli) -> None:
    assert ok(cli("flows", "enroll", "1", "bulk_reminder")) == "enrolled contact 1 in bulk_reminder (enrolment 1)\n"
    [listed] = ok(cli("flows", "enrollments", "1")).splitlines()
    due = START + timedelta(days=1)
    assert re.match(rf"\s*1  bulk_reminder\s+active\s+step 2\s+next {re.escape(due.isoformat())}", listed), listed

    now = ok(cli("run-due", "--at", START.isoformat()))
    assert "outbox: 1 sent" in now and f"to {SAM}" in now and "REMINDER" in now
    early = ok(cli("run-due", "--at", (due - timedelta(minutes=1)).isoformat()))
    assert "flows: 0 enrolments" in early and "outbox: 0 sent" in early
    later = ok(cli("run-due", "--at", due.isoformat()))
    assert "flows: 1 enrolments, 1 steps, 1 messages queued, 0 deferred, 0 skipped, 1 finished" in later
    assert "outbox: 1 sent" in later and f"to {SAM}" in later

    assert ok(cli("flows", "enrollments", "1")) == "no enrolments\n"
    [ended] = ok(cli("flows", "enrollments", "1", "--all")).splitlines()
    assert re.search(r"bulk_reminder\s+done\s+step \d+\s+next -\s+completed", ended), ended
    again = refused(cli("flows", "enroll", "1", "bulk_reminder"))
    assert "may not enrol in 'bulk_reminder' again" in again and "[already_enrolled]" in again


def test_remove_takes_a_contact_out_of_one_enrolment(cli: Cli) -> None:
    ok(cli("flows", "enroll", "1", "bulk_reminder"))
    ok(cli("flows", "enroll", "2", "bulk_reminder"))
    assert "outbox: 2 sent" in ok(cli("run-due", "--at", START.isoformat()))

    assert "contact 1 has no enrolment 2" in refused(cli("flows", "remove", "1", "2"))
    assert ok(cli("flows", "remove", "2", "2")) == "removed enrolment 2\n"
    [removed] = ok(cli("flows", "enrollments", "2", "--all")).splitlines()
    assert re.search(r"bulk_reminder\s+cancelled\s+.*removed by agent:1", removed), removed
    assert "already ended (cancelled)" in refused(cli("flows", "remove", "2", "2"))

    next_day = ok(cli("run-due", "--at", (START + timedelta(days=1)).isoformat()))
    assert "outbox: 1 sent" in next_day and f"to {SAM}" in next_day and LEE not in next_day


def test_enrolment_commands_refuse_bad_input_in_one_line(cli: Cli) -> None:
    assert "no flow named 'nope' [unknown_flow]" in refused(cli("flows", "enroll", "1", "nope"))
    assert "no contact with id 42" in refused(cli("flows", "enroll", "42", "bulk_reminder"))
    assert "not an ISO-8601 date-time" in refused(cli("run-due", "--at", "tomorrow"))
    listing = ok(cli("flows", "list"))
    assert listing.startswith("bulk_reminder ") and "manual:" in listing


def test_enrol_from_a_csv_file_reports_each_rejected_row(cli: Cli, tmp_path: Path) -> None:
    csv_file = tmp_path / "enrol.csv"
    csv_file.write_text(f"phone\n{SAM}\n+12125550199\n{SAM}\n", encoding="utf-8")
    out = cli("flows", "enroll-csv", "bulk_reminder", str(csv_file))
    assert out.exit_code == 1
    assert out.stdout.splitlines()[0] == "enrolled 1 contact in bulk_reminder, skipped 1 already in it, rejected 1"
    assert "line 3: no contact has the address +12125550199" in out.stdout
    assert "line 4: skipped, contact 1 is already in bulk_reminder" in out.stdout
    assert "outbox: 1 sent" in ok(cli("run-due", "--at", START.isoformat()))
    assert "no flow named 'nope'" in refused(cli("flows", "enroll-csv", "nope", str(csv_file)))


def test_dry_run_prints_each_message_its_time_and_the_policys_answer_and_writes_nothing(tmp_path: Path) -> None:
    """`optflow flows dry-run FLOW CONTACT` as a user runs it: a real process on a real file."""
    assert run_cli(tmp_path, "init").returncode == 0
    assert run_cli(tmp_path, "contacts", "add", "--name", "Sam", "--phone", SAM, "--email", "sam@example.com",
                   "--time-zone", "America/New_York").returncode == 0
    assert run_cli(tmp_path, "consent", "record", "1", "--method", "web_form", "--as", "1").returncode == 0
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")

    def rows() -> list[int]:
        with engine.connect() as conn:
            return [conn.execute(select(func.count()).select_from(t)).scalar_one()
                    for t in (orm.messages, orm.enrollments, orm.enrollment_steps, orm.ledger, orm.consents)]

    before = rows()
    run = run_cli(tmp_path, "flows", "dry-run", "welcome_drip", "1", "--at", "2026-11-23T08:00:00Z")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("Dry run of welcome_drip (version ") and "nothing is written or sent" in lines[0]
    # 03:00 in New York on day 1: the first text waits for 08:00, the second goes two days later.
    assert f"    text to {SAM} at 2026-11-24 13:00 UTC, defer: quiet hours: it is Tue 03:00 in America/New_York" \
        in run.stdout
    assert f"    text to {SAM} at 2026-11-26 13:00 UTC, allow" in lines
    assert "      | Hi Sam, thanks for your interest in Demo organisation!" in run.stdout
    assert "    email to sam@example.com at 2026-12-01 15:00 UTC, deny: marketing needs an opt-in; the consent " \
           "is unknown" in lines
    assert lines[-1] == "End: done: completed. 2 messages would be sent, 1 not."
    assert rows() == before
    engine.dispose()

    unknown = run_cli(tmp_path, "flows", "dry-run", "nope", "1")
    assert unknown.returncode == 1 and "no flow named 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    bad_data = run_cli(tmp_path, "flows", "dry-run", "welcome_drip", "1", "--data", "[1]")
    assert bad_data.returncode == 1 and "the event data must be a JSON object" in bad_data.stderr
