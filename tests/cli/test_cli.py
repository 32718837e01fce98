"""The `optflow` command line, run as a user would: a real process on a real database file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, delete, update

from conftest import run_cli as optflow
from optflow.adapters import orm


def test_simulate_shows_a_whole_conversation_and_the_ledger(tmp_path: Path) -> None:
    run = optflow(tmp_path, "simulate", stdin="/request\nYES\nHELP\nSTOP\nSTART\n")
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for expected in ("Reply YES", "[state: text requested]", "[understood as: opt_in]", "[state: text opted_in]",
                     "[understood as: help]", "[understood as: opt_out]", "[state: text opted_out]",
                     "to Dana: Sam opted out", "Ledger:", "requested -> opted_in", "opted_in -> opted_out",
                     "opted_out -> opted_in"):
        assert expected in out, f"{expected!r} missing from:\n{out}"
    assert out.index("opted_in -> opted_out") < out.index("opted_out -> opted_in")


def test_simulate_with_a_pin(tmp_path: Path) -> None:
    run = optflow(tmp_path, "simulate", "--pin", stdin="/request\nyes\n/pin 000000\n")
    assert "(awaiting PIN)" in run.stdout and "refused: wrong code" in run.stdout


def test_init_contacts_consent_and_ledger(tmp_path: Path) -> None:
    init = optflow(tmp_path, "init")
    assert init.returncode == 0 and "admin API token" in init.stdout
    assert "already initialised" in optflow(tmp_path, "init").stdout
    add = optflow(tmp_path, "contacts", "add", "--name", "Sam", "--phone", "(415) 555-2671",
                  "--email", "Sam@Example.COM")
    assert add.returncode == 0, add.stderr
    record = optflow(tmp_path, "consent", "record", "+14155552671", "--as", "1", "--method", "paper_form",
                     "--at", "2026-11-01T10:00:00Z", "--evidence", "form #7")
    assert "opted_in" in record.stdout, record.stderr
    shown = optflow(tmp_path, "contacts", "show", "sam@example.com")
    assert '"state": "opted_in"' in shown.stdout and "+14155552671" in shown.stdout
    ledger = optflow(tmp_path, "ledger", "show", "+14155552671")
    assert "unknown -> opted_in" in ledger.stdout and "paper_form" in ledger.stdout and "form #7" in ledger.stdout
    assert "2026-11-01T10:00:00" in ledger.stdout
    verify = optflow(tmp_path, "ledger", "verify")
    assert verify.returncode == 0 and "ledger intact" in verify.stdout


def test_ledger_verify_reports_tampering(tmp_path: Path) -> None:
    optflow(tmp_path, "init")
    optflow(tmp_path, "contacts", "add", "--phone", "+14155552671")
    optflow(tmp_path, "consent", "opt-out", "1", "--as", "1")
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with engine.begin() as conn:
        conn.execute(update(orm.ledger).values(to_state="opted_in"))
    engine.dispose()
    verify = optflow(tmp_path, "ledger", "verify")
    assert verify.returncode == 1
    assert "TAMPERED" in verify.stderr and "edited" in verify.stderr


def test_ledger_key_checkpoints_and_a_cut_chain(tmp_path: Path) -> None:
    """With no configuration the key file is generated beside the database (0600, announced);
    a checkpoint taken before the newest entry and the head row are deleted exposes the cut."""
    init = optflow(tmp_path, "init")
    key_file = tmp_path / "cli.db-ledger.keys"
    assert f"generated a new ledger key in {key_file}" in init.stderr and "back this file up" in init.stderr
    assert key_file.stat().st_mode & 0o777 == 0o600
    optflow(tmp_path, "contacts", "add", "--phone", "+14155552671")
    optflow(tmp_path, "consent", "opt-out", "1", "--as", "1")
    assert "1 checkpoint(s) written" in optflow(tmp_path, "ledger", "checkpoint").stdout
    exported = optflow(tmp_path, "ledger", "checkpoint", "--export").stdout.splitlines()
    assert len(exported) == 1 and '"org_id":1,"seq":1' in exported[0]
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with engine.begin() as conn:
        conn.execute(delete(orm.ledger))
        conn.execute(delete(orm.ledger_heads))
    engine.dispose()
    verify = optflow(tmp_path, "ledger", "verify")
    assert verify.returncode == 1, verify.stdout
    assert "head row is missing" in verify.stderr and "the chain ends at seq 0, but the checkpoint" in verify.stderr
    rotated = optflow(tmp_path, "ledger", "rotate-key")
    assert rotated.returncode == 0 and "added ledger key" in rotated.stdout
    assert len([line for line in key_file.read_text().splitlines() if not line.startswith("#")]) == 2


def test_the_cli_reopens_no_opt_out_without_a_supervisors_reason(tmp_path: Path) -> None:
    """Issue 10, hole 4: `consent record` and `consent reset` reopened an opt-out with no role at
    all. The CLI acts as a named agent; an agent cannot reopen it, a supervisor only with a reason
    (reset) or evidence of a consent given after the opt-out (record)."""
    optflow(tmp_path, "init")
    optflow(tmp_path, "contacts", "add", "--phone", "+14155552671")
    optflow(tmp_path, "agents", "add", "Dana")  # agent 2, role agent
    optflow(tmp_path, "agents", "add", "Lee", "--role", "supervisor")  # agent 3
    optflow(tmp_path, "consent", "record", "1", "--as", "Dana", "--method", "verbal")
    assert optflow(tmp_path, "consent", "opt-out", "1", "--as", "Dana").returncode == 0
    month_before = (datetime.now(UTC) - timedelta(days=30)).isoformat()
    before = optflow(tmp_path, "ledger", "show").stdout
    for args, message in [
        (("record", "1", "--as", "Dana", "--method", "paper_form", "--at", month_before, "--evidence", "form #7"),
         "only the customer can reopen"),
        (("record", "1", "--as", "Lee", "--method", "paper_form", "--at", month_before, "--evidence", "form #7"),
         "occurred_at"),
        (("record", "1", "--method", "paper_form"), "say who is acting: --as AGENT"),
        (("reset", "1", "--as", "Dana", "--evidence", "reassigned"), "only a supervisor can reset"),
        (("reset", "1", "--as", "Lee"), "reason"),
        (("reset", "1"), "say who is acting: --as AGENT"),
    ]:
        run = optflow(tmp_path, "consent", *args)
        assert run.returncode in (1, 2) and message in run.stderr, (args, run.stderr)  # 2: a usage error
        assert "Traceback" not in run.stderr
    assert optflow(tmp_path, "ledger", "show").stdout == before
    assert '"state": "opted_out"' in optflow(tmp_path, "contacts", "show", "1").stdout


@pytest.mark.parametrize(("args", "message"), [
    (("contacts", "add", "--phone", "not a number"), "'not a number' is not a phone number"),
    (("consent", "record", "1", "--as", "1", "--channel", "fax"), "unknown channel 'fax'"),
    (("consent", "record", "1", "--as", "1"), "a manual opt-in needs a method"),
    (("consent", "request", "42", "--as", "1"), "no contact with id 42"),
    (("consent", "record", "1", "--as", "1", "--method", "verbal", "--at", "yesterday"), "not an ISO-8601 date-time"),
    (("consent", "record", "1", "--method", "verbal"), "say who is acting: --as AGENT"),
    (("consent", "record", "1", "--as", "Nobody", "--method", "verbal"), "no agent called 'Nobody' in org 1"),
])
def test_bad_input_gets_one_clear_line(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    optflow(tmp_path, "init")
    optflow(tmp_path, "contacts", "add", "--phone", "+14155552671")
    before = optflow(tmp_path, "ledger", "show").stdout
    run = optflow(tmp_path, *args)
    assert run.returncode != 0
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert optflow(tmp_path, "ledger", "show").stdout == before


def test_contacts_import_reports_rejected_rows(tmp_path: Path) -> None:
    optflow(tmp_path, "init")
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("name,phone,email\nAna,+14155550101,ana@example.com\nBad,12,\nBo,,bo@example.com\n"
                        "Dup,+14155550101,\n", encoding="utf-8")
    run = optflow(tmp_path, "contacts", "import", str(csv_file), "--rejects", str(tmp_path / "rejects.csv"))
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    assert "imported 2 contacts, skipped 1 already present, rejected 1" in run.stdout
    assert "line 3: '12' is not a valid phone number" in run.stdout
    assert "line 5: skipped, already present as contact 1" in run.stdout
    assert (tmp_path / "rejects.csv").read_text().count("\n") == 2


def test_diagram_prints_mermaid(tmp_path: Path) -> None:
    run = optflow(tmp_path, "diagram")
    assert run.stdout.startswith("stateDiagram-v2") and "opted_in --> opted_out: opt_out" in run.stdout
