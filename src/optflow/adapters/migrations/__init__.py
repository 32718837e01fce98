"""Schema migrations with Alembic, configured in code (no alembic.ini); the revisions ship in
`versions/` inside the package.

A database is in one of four states (`SchemaState`):

- *empty*: no optflow table. `create_or_check` (every process that bootstraps with
  `create_schema`) creates the tables from `orm.metadata` and stamps them with the head revision,
  in one transaction. `upgrade` instead runs every revision from the first; a test proves both
  give the same schema.
- *unversioned*: optflow's tables but no version: made by optflow before it had migrations.
  `upgrade` checks they are the first revision's tables, stamps them as that revision
  (`BASELINE`) and upgrades from there.
- *behind* (or unknown to this code, i.e. upgraded by a newer optflow): refused by
  `create_or_check` with `SchemaNotCurrent`, whose message names what to run.
- *at head*: ready.

`upgrade` runs in a single transaction: an error leaves the database as it was (SQLite and
PostgreSQL both roll back DDL).
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.operations.ops import MigrationScript
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, inspect, text
from sqlmodel.sql.sqltypes import AutoString

from .. import db, orm

SCRIPT_LOCATION = Path(__file__).resolve().parent
BASELINE = "0001"  # the schema of the last optflow without migrations; unversioned databases are it
VERSION_TABLE = "alembic_version"
UPGRADE_COMMAND = "optflow db upgrade"
AUTOGENERATE = "optflow_autogenerate"  # config attribute: a `revision` run that must not write empty files
COMPARE_OPTIONS: dict[str, Any] = {"compare_type": True, "compare_server_default": True}  # what autogenerate compares
_POSTGRES_LOCK_KEY = 0x0F7F_10A1  # pg_advisory_xact_lock: one schema change or creation at a time


class SchemaError(Exception):
    """A problem with the database schema that the operator must act on; the message says how."""


class SchemaNotCurrent(SchemaError):
    """The database's schema is not the revision this optflow was written for."""


@dataclass(frozen=True)
class SchemaState:
    revisions: tuple[str, ...]  # what the version table holds (none: no table or no row)
    head: str  # the newest revision this code knows
    known: frozenset[str]  # every revision this code knows
    optflow_tables: frozenset[str]  # which of optflow's tables exist

    @property
    def empty(self) -> bool:
        return not self.revisions and not self.optflow_tables

    @property
    def unversioned(self) -> bool:
        return not self.revisions and bool(self.optflow_tables)

    @property
    def at_head(self) -> bool:
        return self.revisions == (self.head,)

    @property
    def unknown(self) -> tuple[str, ...]:
        return tuple(r for r in self.revisions if r not in self.known)

    def problem(self) -> str | None:
        """Why code at `head` cannot use this database, naming what to do; None if it can."""
        if self.at_head or self.empty:
            return None
        if self.unversioned:
            return ("the database has optflow's tables but no schema revision (optflow created it before it had "
                    f"migrations): back it up and run `{UPGRADE_COMMAND}`")
        current = ", ".join(self.revisions)
        if self.unknown:
            return (f"the database schema is at revision {current}, which this optflow does not know (its newest is "
                    f"{self.head}): a newer optflow upgraded it; run that version")
        return (f"the database schema is at revision {current} but this optflow needs {self.head}: "
                f"back it up and run `{UPGRADE_COMMAND}`")


@dataclass(frozen=True)
class UpgradeReport:
    before: SchemaState
    after: tuple[str, ...]


def alembic_config(connection: Connection | None = None, **attributes: Any) -> Config:
    """Alembic's configuration for optflow; `env.py` runs on `connection`."""
    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes.update(connection=connection, **attributes)
    return config


@functools.cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head() -> str:
    """The newest revision (the history is one line: more than one head is an error)."""
    revision = scripts().get_current_head()
    assert revision is not None, f"no revisions in {SCRIPT_LOCATION / 'versions'}"
    return revision


def read_state(connection: Connection) -> SchemaState:
    tables = set(inspect(connection).get_table_names())
    revisions: tuple[str, ...] = ()
    if VERSION_TABLE in tables:
        rows = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
        revisions = tuple(sorted(rows))
    known = frozenset(script.revision for script in scripts().walk_revisions())
    return SchemaState(revisions, head(), known, frozenset(tables & set(orm.metadata.tables)))


def current_state(engine: Engine) -> SchemaState:
    with engine.connect().execution_options(**{db.READ_ONLY: True}) as connection:
        return read_state(connection)


def create_or_check(engine: Engine) -> None:
    """An empty database gets optflow's tables, stamped with the head revision; any other must be
    at the head revision already, else `SchemaNotCurrent`.

    A fresh database is made with `metadata.create_all` rather than by running every revision:
    it takes one step however long the history grows (many tests create one), and Alembic's
    cookbook recommends it. `tests/integration/test_migrations.py` proves the result is the
    schema the revisions build."""
    with _schema_transaction(engine) as connection:
        state = read_state(connection)
        if state.empty:
            orm.metadata.create_all(connection)
            MigrationContext.configure(connection).stamp(scripts(), "head")
            return
    problem = state.problem()
    if problem:
        raise SchemaNotCurrent(problem)


def upgrade(engine: Engine) -> UpgradeReport:
    """Bring the database to the head revision, in one transaction: run the revisions it lacks;
    an unversioned database is first recognised as `BASELINE` (its tables checked); an empty one
    gets every revision. A database at a revision this code does not know is left alone."""
    with _schema_transaction(engine, migrating=True) as connection:
        before = read_state(connection)
        if before.unknown:
            raise SchemaNotCurrent(before.problem())
        if before.unversioned:
            missing = _missing_from_baseline(connection)
            if missing:
                raise SchemaError(
                    "the database has some of optflow's tables but not those of its first schema revision "
                    f"(missing {', '.join(missing)}); it was left unchanged")
            MigrationContext.configure(connection).stamp(scripts(), BASELINE)
        command.upgrade(alembic_config(connection), "head")
        after = read_state(connection)
    return UpgradeReport(before, after.revisions)


def _missing_from_baseline(connection: Connection) -> list[str]:
    """The tables and columns of the `BASELINE` revision that the database lacks, learnt by
    building that revision in a scratch in-memory SQLite database."""
    scratch = create_engine("sqlite://")
    try:
        with scratch.begin() as scratch_connection:
            command.upgrade(alembic_config(scratch_connection), BASELINE)
            expected = _columns(scratch_connection)
    finally:
        scratch.dispose()
    expected.pop(VERSION_TABLE, None)
    present = _columns(connection)
    return [f"{table}.{column}" if table in present else table
            for table, columns in sorted(expected.items())
            for column in (sorted(columns - present[table]) if table in present else [None])]


def _columns(connection: Connection) -> dict[str, set[str]]:
    inspector = inspect(connection)
    return {table: {column["name"] for column in inspector.get_columns(table)}
            for table in inspector.get_table_names()}


@contextmanager
def _schema_transaction(engine: Engine, *, migrating: bool = False) -> Iterator[Connection]:
    """One transaction for a schema creation or upgrade, one process at a time (SQLite: optflow
    begins every write transaction with the write lock; PostgreSQL: an advisory lock).

    Migrating on SQLite follows SQLite's own recipe for schema changes (lang_altertable.html,
    also Alembic's batch-mode advice): foreign keys off, since a table is altered by copying
    it, dropping the original and renaming the copy (with enforcement on, the drop would delete
    or refuse rows that others reference); `PRAGMA foreign_key_check` before committing."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        raw: Any = connection.connection.dbapi_connection
        if migrating and sqlite:
            raw.execute("PRAGMA foreign_keys=OFF")  # outside a transaction, where it takes effect
        try:
            with connection.begin():
                if engine.dialect.name == "postgresql":
                    connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_LOCK_KEY})
                yield connection
                if migrating and sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise SchemaError(f"the upgrade would break {len(broken)} foreign key(s), e.g. "
                                               f"{tuple(broken[0])}; nothing was changed")
        finally:
            if migrating and sqlite:
                raw.execute("PRAGMA foreign_keys=ON")


def render_item(type_: str, obj: Any, context: AutogenContext) -> str | Literal[False]:
    """Autogenerated revisions name plain SQLAlchemy types, not optflow's own: a revision is
    history and must not change when `orm.py` does."""
    if type_ == "type" and isinstance(obj, orm.UtcDateTime):
        return "sa.DateTime()"
    if type_ == "type" and isinstance(obj, AutoString):
        return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


def skip_empty_revision(context: MigrationContext, revision: Any, directives: list[MigrationScript]) -> None:
    """`revision` writes nothing when the metadata and the database already agree."""
    script = directives[0]
    if script.upgrade_ops is not None and script.upgrade_ops.is_empty():
        directives[:] = []


def next_revision_id() -> str:
    numbers = [int(script.revision) for script in scripts().walk_revisions() if script.revision.isdigit()]
    return f"{max(numbers, default=0) + 1:04d}"
