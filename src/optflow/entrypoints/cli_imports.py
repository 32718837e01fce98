"""`optflow import consents|suppressions FILE`: bulk imports from a CSV file, streamed.

The file is read twice, a line at a time, so a file of millions of rows needs no more memory than
one batch: first to check that it is UTF-8, that it reads as CSV and that its header fits (else
it is refused with exit status 2 and nothing is written), and to count its rows for the progress
bar; then to import it, `imports.BATCH_ROWS` rows per transaction. Rejected rows go to the
rejects file as they come (the row as it was, after `rejected_line` and `rejected_reason`).
"""

from __future__ import annotations

import codecs
import csv
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

import click

from ..domain.model import InvalidInput
from ..service_layer import imports
from .cli import ACTING_AGENT_HELP, Ctx, friendly_errors, pass_ctx
from .cli_csv import EXIT_ROWS_REJECTED, FileRefused, check_rejects_path, default_rejects_path

CHUNK = 1 << 16


def _check_encoding(path: Path) -> None:
    """Refuse a file that is not UTF-8, naming the byte, its offset and its line; reads it in chunks."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = lines = 0
    try:
        with path.open("rb") as data:
            while chunk := data.read(CHUNK):
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    where, line = offset + exc.start, lines + chunk.count(b"\n", 0, exc.start) + 1
                    raise FileRefused(path, f"is not UTF-8: byte 0x{chunk[exc.start]:02X} at offset {where} (line "
                                            f"{line}); save it as UTF-8 "
                                            "(\"CSV UTF-8\" in a spreadsheet) and import it again") from None
                offset += len(chunk)
                lines += chunk.count(b"\n")
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise FileRefused(path, "is not UTF-8: it ends inside a character") from None
    except OSError as exc:
        raise FileRefused(path, f"cannot be read ({exc.strerror})") from None


def _rows(path: Path, kind: str) -> Iterator[imports.Row]:
    with path.open(encoding="utf-8-sig", newline="") as text:
        yield from imports.read_rows(text, kind)


def _check_and_count(path: Path, kind: str) -> int:
    _check_encoding(path)
    try:
        return sum(1 for _ in _rows(path, kind))
    except InvalidInput as exc:
        raise FileRefused(path, str(exc)) from None
    except csv.Error as exc:
        raise FileRefused(path, f"cannot be read as CSV ({exc})") from None


def _original_columns(path: Path) -> tuple[list[str], set[int]]:
    """The header as written, and the positions of the columns of an earlier rejects file (a
    corrected rejects file is imported as it is; its own two columns are not repeated)."""
    with path.open(encoding="utf-8-sig", newline="") as text:
        for fields in csv.reader(text):
            if any(field.strip() for field in fields):
                ours = {i for i, name in enumerate(fields) if name.strip().lower() in imports.REJECTS_COLUMNS}
                return fields, ours
    return [], set()


def run_import(obj: Ctx, kind: str, path: Path, rejects: Path | None, org: int | None, acting: str | None) -> None:
    rejects = rejects or default_rejects_path(path)
    check_rejects_path(path, rejects)
    total = _check_and_count(path, kind)
    org_id = obj.org_id(org)
    actor = obj.acting_agent(acting, org_id)
    header, earlier_rejects = _original_columns(path)
    tally = imports.Tally()
    out: TextIO | None = None
    listed = 0
    try:
        with click.progressbar(length=total, label=f"{total} row{'s' if total != 1 else ''}", file=sys.stderr) as bar:
            for batch in imports.batches(_rows(path, kind)):
                for row, _, reason in imports.import_batch(obj.system.bus, kind, org_id, actor, batch, tally):
                    if reason is None:
                        continue
                    if out is None:
                        out = rejects.open("w", newline="", encoding="utf-8")
                        writer = csv.writer(out)
                        writer.writerow([*imports.REJECTS_COLUMNS,
                                         *(f for i, f in enumerate(header) if i not in earlier_rejects)])
                    kept = (f for i, f in enumerate(row.fields) if i not in earlier_rejects)
                    writer.writerow([row.line, reason, *kept])
                    if listed < 50:
                        listed += 1
                        click.echo(f"  line {row.line}: {reason}", err=True)
                bar.update(len(batch))
    finally:
        if out is not None:
            out.close()
        what = "consents" if kind == "consents" else "suppressions"
        click.echo(f"{tally.rows} of {total} rows: imported {tally.imported} {what}, skipped {tally.skipped} already "
                   f"on record, rejected {tally.rejected}")
        if out is not None:
            click.echo(f"rejected rows (with the reason) written to {rejects}")
    if tally.rejected:
        raise click.exceptions.Exit(EXIT_ROWS_REJECTED)


def register(main: click.Group) -> None:
    @main.group("import")
    def import_group() -> None:
        """Bulk imports from CSV files: consents and opt-outs given elsewhere, the suppression list."""

    def import_command(name: str) -> Callable[[Callable[..., None]], Any]:
        """An `import` subcommand taking a CSV file, where its rejects go, the org and who imports."""
        def decorate(func: Callable[..., None]) -> Any:
            for option in reversed((
                import_group.command(name),
                click.argument("csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
                click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path),
                             help="Where rejected rows go, with their line and reason "
                                  "(default: FILE.rejects.csv beside FILE)."),
                click.option("--org", type=int),
                click.option("--as", "acting", envvar="OPTFLOW_AGENT", help=ACTING_AGENT_HELP),
                pass_ctx,
                friendly_errors,
            )):
                func = option(func)
            return func
        return decorate

    @import_command("consents")
    def import_consents(obj: Ctx, csv_file: Path, rejects: Path | None, org: int | None, acting: str | None) -> None:
        """Import consents and opt-outs given elsewhere from a UTF-8 CSV file with the columns
        channel, state (opted_in / opted_out), occurred_at (when given, ISO-8601), method, phone
        and/or email, and optionally external_id, name, evidence, source (docs/integrations.md).

        Each consent is a ledger entry dated as given; one already on record is skipped, so the
        same file imported again changes nothing. Exit status: 0 every row imported or skipped,
        1 some rows rejected (see the rejects file), 2 the file refused and nothing written."""
        run_import(obj, "consents", csv_file, rejects, org, acting)

    @import_command("suppressions")
    def import_suppressions(obj: Ctx, csv_file: Path, rejects: Path | None, org: int | None,
                            acting: str | None) -> None:
        """Import a suppression list (addresses never to be messaged) from a UTF-8 CSV file with
        the columns phone or email, reason, and optionally channel (default: every channel).
        Exit status as for `import consents`."""
        run_import(obj, "suppressions", csv_file, rejects, org, acting)
