"""`optflow import consents|suppressions FILE`, run as a user runs it: a progress bar on stderr,
a rejects file naming each bad row's line and reason, and a second run that changes nothing."""

from __future__ import annotations

import csv
from pathlib import Path

from conftest import run_cli as optflow

CONSENTS = """external_id,name,phone,email,channel,state,method,occurred_at,evidence
CRM-1,Sam,+14155552671,,text,opted_in,web_form,2026-03-01T09:30:00Z,form 12
CRM-2,Kim,(415) 555-2672,,text,opted_out,,2026-04-01,
CRM-3,Lee,not a number,,text,opted_in,web_form,2026-03-01,
CRM-4,Max,+14155552674,,text,maybe,web_form,2026-03-01,
CRM-5,Ana,,ana@example.com,email,opted_in,paper_form,2026-02-01T12:00:00+01:00,
"""


def ledger_lines(tmp_path: Path) -> list[str]:
    shown = optflow(tmp_path, "ledger", "show")
    assert shown.returncode == 0, shown.stderr
    return [line for line in shown.stdout.splitlines() if line.startswith("#")]


def test_import_consents_with_rejects_then_again_changes_nothing(tmp_path: Path) -> None:
    assert optflow(tmp_path, "init").returncode == 0
    source = tmp_path / "consents.csv"
    source.write_text(CONSENTS, encoding="utf-8")

    first = optflow(tmp_path, "import", "consents", str(source), "--as", "1")

    assert first.returncode == 1, first.stderr
    assert "imported 3 consents, skipped 0 already on record, rejected 2" in first.stdout
    assert "5 rows" in first.stderr  # the progress bar's label
    with (tmp_path / "consents.rejects.csv").open(encoding="utf-8", newline="") as rejects:
        rows = list(csv.reader(rejects))
    assert rows[0] == ["rejected_line", "rejected_reason", *CONSENTS.splitlines()[0].split(",")]
    assert [(row[0], row[2]) for row in rows[1:]] == [("4", "CRM-3"), ("5", "CRM-4")]
    assert "phone number" in rows[1][1].lower() or "number" in rows[1][1].lower()
    assert "state must be opted_in or opted_out" in rows[2][1]
    entries = ledger_lines(tmp_path)
    assert len(entries) == 3
    assert any("2026-03-01T09:30:00+00:00" in line and "opted_in" in line and "recorded" in line for line in entries)

    shown = optflow(tmp_path, "contacts", "show", "+14155552671")
    assert '"external_id": "CRM-1"' in shown.stdout and '"name": "Sam"' in shown.stdout

    second = optflow(tmp_path, "import", "consents", str(source), "--as", "1")

    assert "imported 0 consents, skipped 3 already on record, rejected 2" in second.stdout
    assert ledger_lines(tmp_path) == entries


def test_a_file_that_is_not_utf8_or_has_an_unknown_column_is_refused_whole(tmp_path: Path) -> None:
    assert optflow(tmp_path, "init").returncode == 0
    latin = tmp_path / "latin.csv"
    latin.write_bytes(CONSENTS.replace("Sam", "Sébastien").encode("latin-1"))
    refused = optflow(tmp_path, "import", "consents", str(latin), "--as", "1")
    assert refused.returncode == 2 and "is not UTF-8: byte 0xE9" in refused.stderr and "line 2" in refused.stderr

    extra = tmp_path / "extra.csv"
    extra.write_text("phone,channel,state,occurred_at,opted_out_at\n+14155552671,text,opted_in,2026-01-01,\n")
    refused = optflow(tmp_path, "import", "consents", str(extra), "--as", "1")
    assert refused.returncode == 2 and "unknown column 'opted_out_at'" in refused.stderr
    assert ledger_lines(tmp_path) == []


def test_import_suppressions_then_a_message_is_refused(tmp_path: Path) -> None:
    assert optflow(tmp_path, "init").returncode == 0
    assert optflow(tmp_path, "contacts", "add", "--phone", "+14155552671").returncode == 0
    source = tmp_path / "suppressions.csv"
    source.write_text("phone,email,channel,reason\n+14155552671,,,litigator\n,x@example.com,email,complaint\n"
                      ",,,no address\n", encoding="utf-8")

    first = optflow(tmp_path, "import", "suppressions", str(source), "--as", "1")
    again = optflow(tmp_path, "import", "suppressions", str(source), "--as", "1")

    assert "imported 2 suppressions, skipped 0 already on record, rejected 1" in first.stdout
    assert "imported 0 suppressions, skipped 2 already on record, rejected 1" in again.stdout
    assert len(ledger_lines(tmp_path)) == 2
    sent = optflow(tmp_path, "consent", "request", "+14155552671", "--as", "1")
    assert sent.returncode == 1 and "suppression list (litigator)" in sent.stderr
