"""Write a new revision from the difference between `orm.py` and the head revision:

    python -m optflow.adapters.migrations revision -m "add contacts.locale"

(or `make revision m="add contacts.locale"`). It builds a scratch database at the head revision
(SQLite in a temporary directory, or the empty database given with --database), compares it with
`orm.metadata` as Alembic's autogenerate does, and writes `versions/NNNN_<message>.py` into the
package's source directory (run it from a checkout with an editable install). Read and edit the
file before committing it: autogenerate cannot see renames, and data changes are yours to add.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
from alembic import command

from .. import db
from . import AUTOGENERATE, SCRIPT_LOCATION, alembic_config, next_revision_id, upgrade


@click.group()
def main() -> None:
    """optflow's schema revisions (for developers)."""


@main.command()
@click.option("-m", "--message", required=True, help="What the revision changes, e.g. 'add contacts.locale'.")
@click.option("--database", help="An empty scratch database to compare on (default: SQLite in a temp directory).")
def revision(message: str, database: str | None) -> None:
    """Autogenerate the next revision from orm.py."""
    with tempfile.TemporaryDirectory(prefix="optflow-revision-") as scratch:
        engine = db.make_engine(database or f"sqlite:///{Path(scratch) / 'scratch.db'}")
        try:
            upgrade(engine)
            with engine.begin() as connection:
                script = command.revision(alembic_config(connection, **{AUTOGENERATE: True}), message=message,
                                          autogenerate=True, rev_id=next_revision_id())
        finally:
            engine.dispose()
    written = (script[0] if script else None) if isinstance(script, list) else script
    if written is None:
        click.echo("orm.py and the head revision agree: no revision written")
        return
    click.echo(f"wrote {Path(written.path).relative_to(SCRIPT_LOCATION.parent)}: "
               "read it, adjust it, and add a test for any data it moves")


if __name__ == "__main__":
    main(prog_name="python -m optflow.adapters.migrations")
