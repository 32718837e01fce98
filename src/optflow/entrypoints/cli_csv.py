"""CSV files for the bulk commands (`contacts import`, `flows enroll-csv`): reading one, and
reporting what became of each of its rows.

The whole file is read, decoded and its header checked before anything is written: a file that
is not UTF-8 (a byte-order mark is accepted), cannot be read as CSV, or has a column the command
does not know is refused with exit status 2 and nothing changes. A column the command would
ignore could hold what must not be lost (an opt-out and its date), so none is ignored silently.

Then every row is imported, skipped because it is already there, or rejected with its reason.
Rejected rows go to a rejects file: the row as it was, after two columns `rejected_line` and
`rejected_reason`; the importers accept (and ignore) those two columns, so the corrected file
can be imported as it is. The summary always prints, also when the run stops half-way (the rows
not reached are then written to the rejects file too); the exit status is 1 when any row was
rejected, 0 otherwise.
"""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from ..domain.model import DomainError

EXIT_ROWS_REJECTED = 1
EXIT_FILE_REFUSED = 2
REJECTS_COLUMNS = ("rejected_line", "rejected_reason")
LISTED = 50  # rows listed by line on the terminal, per kind; the rejects file has them all


class FileRefused(click.ClickException):
    """The file as a whole cannot be imported; nothing was written."""

    exit_code = EXIT_FILE_REFUSED

    def __init__(self, path: Path | None, problem: str) -> None:
        super().__init__(f"{path}: {problem}; nothing was written" if path else f"{problem}; nothing was written")


@dataclass(frozen=True)
class CsvRow:
    line: int  # where the row starts in the file (a quoted field may span lines)
    fields: tuple[str, ...]  # as in the file
    values: dict[str, str]  # column (lower case) -> the field without surrounding spaces
    problem: str | None  # why the row cannot be read, e.g. a field too many


@dataclass(frozen=True)
class CsvFile:
    path: Path
    header: tuple[str, ...]
    rows: tuple[CsvRow, ...]

    def original(self, fields: Sequence[str]) -> list[str]:
        """The fields of a row (or of the header) without the columns of an earlier rejects file."""
        ours = {i for i, name in enumerate(self.header) if name.strip().lower() in REJECTS_COLUMNS}
        return [field for i, field in enumerate(fields) if i not in ours]


def read_csv(path: Path, known: Sequence[str], needs_one_of: Sequence[str]) -> CsvFile:
    """Every row of `path`, or `FileRefused`. `known`: the columns the command reads (any case,
    surrounding spaces ignored); `needs_one_of`: at least one of them must be there."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileRefused(path, f"cannot be read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FileRefused(path, f"is not UTF-8: byte 0x{data[exc.start]:02X} at offset {exc.start} (line {line}); "
                                "save it as UTF-8 (\"CSV UTF-8\" in a spreadsheet) and import it again") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[CsvRow] = []
    columns: list[str] = []
    start = 1
    try:
        for fields in reader:
            line, start = start, reader.line_num + 1
            if not any(field.strip() for field in fields):
                continue  # a blank line (or only commas) holds nothing to import
            if header is None:
                header = fields
                columns = _check_header(path, header, known, needs_one_of)
                continue
            problem = None
            if len(fields) != len(columns):
                problem = (f"{len(fields)} field{'s' if len(fields) != 1 else ''} where the header has "
                           f"{len(columns)} (a separator too many or too few, or a quote not closed?)")
            values = {} if problem else {column: field.strip() for column, field in zip(columns, fields, strict=True)
                                         if column not in REJECTS_COLUMNS}
            rows.append(CsvRow(line, tuple(fields), values, problem))
    except csv.Error as exc:
        raise FileRefused(path, f"line {reader.line_num}: cannot be read as CSV ({exc})") from None
    if header is None:
        raise FileRefused(path, f"is empty: it needs a header line naming its columns ({', '.join(known)})")
    return CsvFile(path, tuple(header), tuple(rows))


def _check_header(path: Path, header: list[str], known: Sequence[str], needs_one_of: Sequence[str]) -> list[str]:
    columns = [name.strip().lower() for name in header]
    if "" in columns:
        raise FileRefused(path, f"column {columns.index('') + 1} of the header has no name")
    repeated = sorted({column for column in columns if columns.count(column) > 1})
    if repeated:
        raise FileRefused(path, f"the header names {', '.join(map(repr, repeated))} more than once")
    unknown = [name for name, column in zip(header, columns, strict=True)
               if column not in known and column not in REJECTS_COLUMNS]
    if unknown:
        plural = "s" if len(unknown) > 1 else ""
        raise FileRefused(path, f"unknown column{plural} {', '.join(map(repr, unknown))}: this command reads only "
                                f"{', '.join(known)}. Remove the column{plural} to import the rest (what "
                                f"{'they hold' if plural else 'it holds'} will not be imported)")
    if not set(needs_one_of) & set(columns):
        raise FileRefused(path, f"the header must have a {' or '.join(map(repr, needs_one_of))} column")
    return columns


def default_rejects_path(csv_file: Path) -> Path:
    return csv_file.with_name(f"{csv_file.stem}.rejects.csv")


def check_rejects_path(csv_file: Path, rejects: Path) -> None:
    """Refuse, before anything is imported, a rejects file that would overwrite the input or
    could not be written."""
    if rejects.resolve() == csv_file.resolve():
        raise FileRefused(csv_file, "the rejects file cannot be the file being imported")
    if not os.access(rejects.parent if str(rejects.parent) else Path("."), os.W_OK):
        raise FileRefused(csv_file, f"the rejects file {rejects} cannot be written (its directory is not writable)")


RowHandler = Callable[[dict[str, str]], str | None]
"""Imports one row's values; returns None, or why the row was skipped (it is already there);
raises `DomainError` to reject the row."""


def process_rows(source: CsvFile, handle: RowHandler, rejects: Path, summary: Callable[[int, int, int], str]) -> None:
    """Hand every readable row to `handle`, then print the summary and write the rejects file.
    `summary(done, skipped, rejected)` is the first line printed. Exits 1 if any row was rejected;
    an error that stops the run is raised again after the summary."""
    done = 0
    skipped: list[tuple[int, str]] = []
    rejected: list[tuple[CsvRow, str]] = []
    stopped: BaseException | None = None
    finished = 0  # rows dealt with, in file order
    try:
        label = f"{len(source.rows)} row{'s' if len(source.rows) != 1 else ''}"
        with click.progressbar(source.rows, label=label, file=sys.stderr) as bar:
            for row in bar:
                if row.problem:
                    rejected.append((row, row.problem))
                else:
                    try:
                        why_skipped = handle(row.values)
                    except DomainError as exc:
                        rejected.append((row, str(exc)))
                    else:
                        if why_skipped is None:
                            done += 1
                        else:
                            skipped.append((row.line, why_skipped))
                finished += 1
    except BaseException as exc:  # reported with the rows it left undone, then raised again
        stopped = exc
        cause = str(exc).splitlines()[0] if str(exc) else ""
        where = f"line {source.rows[finished].line}" if finished < len(source.rows) else "the end"
        reason = f"not processed: the run stopped at {where} ({type(exc).__name__}{': ' + cause if cause else ''})"
        rejected.extend((row, reason) for row in source.rows[finished:])

    click.echo(summary(done, len(skipped), len(rejected)))
    for row, reason in rejected[:LISTED]:
        click.echo(f"  line {row.line}: {reason}")
    if len(rejected) > LISTED:
        click.echo(f"  ... and {len(rejected) - LISTED} more rejected")
    for line, why in skipped[:LISTED]:
        click.echo(f"  line {line}: skipped, {why}")
    if len(skipped) > LISTED:
        click.echo(f"  ... and {len(skipped) - LISTED} more skipped")
    if rejected:
        _write_rejects(source, rejected, rejects)
    if stopped is not None:
        raise stopped
    if rejected:
        raise click.exceptions.Exit(EXIT_ROWS_REJECTED)


def _write_rejects(source: CsvFile, rejected: list[tuple[CsvRow, str]], path: Path) -> None:
    try:
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow([*REJECTS_COLUMNS, *source.original(source.header)])
            for row, reason in rejected:
                writer.writerow([row.line, reason, *source.original(row.fields)])
    except OSError as exc:
        click.echo(f"could not write the rejected rows to {path}: {exc.strerror}", err=True)
        return
    click.echo(f"rejected rows (with the reason) written to {path}")
