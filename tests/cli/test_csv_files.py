"""`optflow contacts import` and `optflow flows enroll-csv` on files as people make them: a
separator too many, a spreadsheet's own encoding, a column the command does not read, a second
run of the same file, a run that stops half-way. Every row ends up imported, skipped as already
there, or in the rejects file with its reason; the summary always prints; the exit status says
which (0, 1 rows rejected, 2 file refused and nothing written)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import create_engine, func, select, text

from optflow.adapters import orm

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "tests" / "fixtures" / "flows_claims"  # one manual flow, bulk_reminder
ANA, BO, CY = "+14155550101", "+14155550102", "+14155550103"

Cli = Callable[..., Result]


@pytest.fixture
def cli(cli_on: Callable[[Path], Cli]) -> Cli:
    invoke = cli_on(FLOWS)
    assert invoke("init").exit_code == 0
    return invoke


def contacts_in(tmp_path: Path) -> list[tuple[str, str]]:
    """(name, address) of every stored contact address."""
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(orm.contacts.c.name, orm.addresses.c.value).join(
                orm.addresses, orm.addresses.c.contact_id == orm.contacts.c.id)
                .order_by(orm.addresses.c.value)).all()
    finally:
        engine.dispose()
    return [(name, value) for name, value in rows]


def enrolments_in(tmp_path: Path) -> int:
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    try:
        with engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(orm.enrollments)).scalar_one())
    finally:
        engine.dispose()


def rejects_of(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ contacts import


def test_a_row_with_a_field_too_many_or_too_few_is_rejected_and_the_others_imported(cli: Cli, tmp_path: Path) -> None:
    source = write(tmp_path / "contacts.csv",
                   f"name,phone,email\nAna,{ANA},ana@example.com\nExtra,{BO},bo@example.com,oops\n"
                   f"Short,{CY}\nDee,+14155550104,\n")
    run = cli("contacts", "import", str(source))
    assert run.exit_code == 1, run.output
    lines = run.stdout.splitlines()
    assert lines[0] == "imported 2 contacts, skipped 0 already present, rejected 2"
    assert "  line 3: 4 fields where the header has 3" in run.stdout
    assert "  line 4: 2 fields where the header has 3" in run.stdout
    rejects = tmp_path / "contacts.rejects.csv"
    assert f"rejected rows (with the reason) written to {rejects}" in run.stdout
    header, extra, short = rejects_of(rejects)
    assert header == ["rejected_line", "rejected_reason", "name", "phone", "email"]
    assert extra[0] == "3" and extra[1].startswith("4 fields") and extra[2:] == ["Extra", BO, "bo@example.com", "oops"]
    assert short[0] == "4" and short[1].startswith("2 fields") and short[2:] == ["Short", CY]
    assert contacts_in(tmp_path) == [("Ana", ANA), ("Dee", "+14155550104"), ("Ana", "ana@example.com")]


def test_a_file_that_is_not_utf8_is_refused_naming_where(cli: Cli, tmp_path: Path) -> None:
    source = write(tmp_path / "latin1.csv", f"name,phone\nAna,{ANA}\nJos\xe9,{BO}\n".encode("latin-1"))
    run = cli("contacts", "import", str(source))
    assert run.exit_code == 2
    offset = len(f"name,phone\nAna,{ANA}\nJos")
    assert f"{source}: is not UTF-8: byte 0xE9 at offset {offset} (line 3)" in run.stderr
    assert "nothing was written" in run.stderr
    assert contacts_in(tmp_path) == []


def test_utf8_with_a_byte_order_mark_and_spaced_capitalised_headers_are_read(cli: Cli, tmp_path: Path) -> None:
    source = write(tmp_path / "excel.csv", "\ufeffName , Phone\nJosé,+14155550101\n".encode())
    run = cli("contacts", "import", str(source))
    assert run.exit_code == 0, run.output
    assert contacts_in(tmp_path) == [("José", ANA)]


def test_unknown_columns_refuse_the_file_before_anything_is_written(cli: Cli, tmp_path: Path) -> None:
    """An opt-out list with its dates must not be imported as if the contacts had consented to nothing."""
    source = write(tmp_path / "optouts.csv", f"name,phone,consent,opted_out_at\nAna,{ANA},opted_out,2026-01-04\n")
    run = cli("contacts", "import", str(source))
    assert run.exit_code == 2
    assert (f"{source}: unknown columns 'consent', 'opted_out_at': this command reads only name, phone, email, "
            "time_zone, region, marketing") in run.stderr
    assert contacts_in(tmp_path) == []
    assert not (tmp_path / "optouts.rejects.csv").exists()


@pytest.mark.parametrize(("content", "message"), [
    ("", "is empty: it needs a header line"),
    ("name,notes\nAna,x\n", "unknown column 'notes'"),
    ("name\nAna\n", "the header must have a 'phone' or 'email' column"),
    (f"phone,Phone\n{ANA},{BO}\n", "the header names 'phone' more than once"),
    (f"name,,phone\nAna,,{ANA}\n", "column 2 of the header has no name"),
])
def test_other_unusable_headers_are_refused(cli: Cli, tmp_path: Path, content: str, message: str) -> None:
    run = cli("contacts", "import", str(write(tmp_path / "c.csv", content)))
    assert run.exit_code == 2 and message in run.stderr, run.output
    assert contacts_in(tmp_path) == []


def test_a_second_run_adds_nothing_twice_and_the_corrected_rejects_file_imports_as_it_is(
        cli: Cli, tmp_path: Path) -> None:
    source = write(tmp_path / "contacts.csv",
                   f"name,phone,email,marketing\nAna,{ANA},ana@example.com,yes\nBo,{BO},,perhaps\n"
                   f"Mix,{ANA},new@example.com,no\n")
    first = cli("contacts", "import", str(source), "--rejects", str(tmp_path / "out" / "rejected.csv"))
    assert first.exit_code == 2 and "cannot be written" in first.stderr, "the rejects directory is checked first"
    first = cli("contacts", "import", str(source))
    assert first.exit_code == 1
    assert first.stdout.splitlines()[:3] == [
        "imported 1 contact, skipped 0 already present, rejected 2",
        "  line 3: marketing must be yes or no, not 'perhaps'",
        f"  line 4: {ANA} already belongs to contact 1",
    ]
    again = cli("contacts", "import", str(source))
    assert again.exit_code == 1
    assert again.stdout.splitlines()[0] == "imported 0 contacts, skipped 1 already present, rejected 2"
    assert "  line 2: skipped, already present as contact 1" in again.stdout
    assert contacts_in(tmp_path) == [("Ana", ANA), ("Ana", "ana@example.com")]

    rejects = tmp_path / "contacts.rejects.csv"
    fixed = rejects.read_text(encoding="utf-8").replace("perhaps", "no").replace(f"Mix,{ANA},", "Mix,,")
    corrected = write(tmp_path / "corrected.csv", fixed)
    run = cli("contacts", "import", str(corrected))
    assert run.exit_code == 0, run.output
    assert run.stdout == "imported 2 contacts, skipped 0 already present, rejected 0\n"
    assert contacts_in(tmp_path) == [("Ana", ANA), ("Bo", BO), ("Ana", "ana@example.com"), ("Mix", "new@example.com")]


def test_a_run_that_stops_half_way_prints_its_summary_and_rejects_the_rows_it_did_not_reach(
        cli: Cli, tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'cli.db'}")
    with engine.begin() as conn:  # the database fails on the second row, as a full disk would
        conn.execute(text("CREATE TRIGGER failing BEFORE INSERT ON contacts WHEN NEW.name = 'Bo' "
                          "BEGIN SELECT RAISE(ABORT, 'disk I/O error'); END"))
    source = write(tmp_path / "contacts.csv", f"name,phone\nAna,{ANA}\nBo,{BO}\nCy,{CY}\n")
    run = cli("contacts", "import", str(source))
    assert run.exit_code == 1
    assert run.stdout.splitlines()[0] == "imported 1 contact, skipped 0 already present, rejected 2"
    assert "database error: IntegrityError" in run.stderr
    reasons = [row[1] for row in rejects_of(tmp_path / "contacts.rejects.csv")[1:]]
    stopped = "not processed: the run stopped at line 3 (IntegrityError"
    assert len(reasons) == 2 and all(reason.startswith(stopped) for reason in reasons), reasons

    with engine.begin() as conn:
        conn.execute(text("DROP TRIGGER failing"))
    engine.dispose()
    rerun = cli("contacts", "import", str(source))
    assert rerun.exit_code == 0, rerun.output
    assert rerun.stdout.splitlines()[0] == "imported 2 contacts, skipped 1 already present, rejected 0"
    assert contacts_in(tmp_path) == [("Ana", ANA), ("Bo", BO), ("Cy", CY)]


# ------------------------------------------------------------------------------- flows enroll-csv


def test_enroll_csv_rejects_a_bad_row_and_enrols_the_rest_once(cli: Cli, tmp_path: Path) -> None:
    for phone in (ANA, BO, CY):
        assert cli("contacts", "add", "--phone", phone).exit_code == 0
    source = write(tmp_path / "enrol.csv", f"contact_id,phone\n1,{ANA}\n2,{BO},extra\n,{CY}\n1,{BO}\n")
    run = cli("flows", "enroll-csv", "bulk_reminder", str(source))
    assert run.exit_code == 1
    assert run.stdout.splitlines()[:3] == [
        "enrolled 2 contacts in bulk_reminder, skipped 0 already in it, rejected 2",
        "  line 3: 3 fields where the header has 2 (a separator too many or too few, or a quote not closed?)",
        f"  line 5: the columns name different contacts: contact_id 1 is contact 1, phone {BO} is contact 2",
    ]
    assert [row[0] for row in rejects_of(tmp_path / "enrol.rejects.csv")] == ["rejected_line", "3", "5"]
    again = cli("flows", "enroll-csv", "bulk_reminder", str(source))
    assert again.stdout.splitlines()[0] == "enrolled 0 contacts in bulk_reminder, skipped 2 already in it, rejected 2"
    assert enrolments_in(tmp_path) == 2


@pytest.mark.parametrize(("content", "message"), [
    (f"phone,note\n{ANA},first\n".encode(), "unknown column 'note': this command reads only contact_id, phone, email"),
    (b"phone\n+1415555\xff0101\n", "is not UTF-8: byte 0xFF at offset 14 (line 2)"),
])
def test_enroll_csv_refuses_an_unusable_file_before_enrolling_anyone(
        cli: Cli, tmp_path: Path, content: bytes, message: str) -> None:
    assert cli("contacts", "add", "--phone", ANA).exit_code == 0
    run = cli("flows", "enroll-csv", "bulk_reminder", str(write(tmp_path / "enrol.csv", content)))
    assert run.exit_code == 2 and message in run.stderr, run.output
    assert enrolments_in(tmp_path) == 0
