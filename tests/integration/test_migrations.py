"""Schema migrations on SQLite and PostgreSQL: a fresh database (create_all + stamp) is exactly
the schema the revisions build; the revisions build exactly `orm.py` (a change to orm.py without
a revision fails here); a database behind, ahead or half-made is refused or left unchanged; an
upgrade keeps every row, also when it rebuilds a table that others reference."""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Connection, Engine, Index, MetaData, String, inspect, select, text

from conftest import START
from optflow.adapters import db, migrations, orm
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.service_layer import admin
from scratch_databases import empty_databases

KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def schema_differences(connection: Connection, metadata: MetaData) -> list[Any]:
    """What Alembic's autogenerate would write to turn the database into `metadata`."""
    context = MigrationContext.configure(connection, opts=migrations.COMPARE_OPTIONS)
    return list(compare_metadata(context, metadata))


def described(engine: Engine) -> dict[str, Any]:
    """Everything reflection tells about the schema, in a form two databases can be compared by."""
    with engine.connect() as conn:
        inspector = inspect(conn)
        schema: dict[str, Any] = {}
        for table in inspector.get_table_names():
            schema[table] = {
                # In any order: a later revision adds a column at the end of its table.
                "columns": sorted((c["name"], str(c["type"]), c["nullable"], c.get("default"), c.get("autoincrement"))
                                  for c in inspector.get_columns(table)),
                "primary key": inspector.get_pk_constraint(table)["constrained_columns"],
                "foreign keys": sorted((fk["name"] or "", fk["constrained_columns"], fk["referred_table"],
                                        fk["referred_columns"]) for fk in inspector.get_foreign_keys(table)),
                "indexes": sorted((ix["name"] or "", ix["column_names"], ix["unique"])
                                  for ix in inspector.get_indexes(table)),
                "unique": sorted((uc["name"] or "", uc["column_names"])
                                 for uc in inspector.get_unique_constraints(table)),
            }
    return schema


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def empty_engine(kind: str, tmp_path: Path) -> Iterator[Engine]:
    with empty_databases(kind, tmp_path, "migrations") as (url,):
        engine = db.make_engine(url)
        yield engine
        engine.dispose()


def test_a_fresh_database_is_exactly_what_the_revisions_build_and_what_orm_declares(kind: str,
                                                                                    tmp_path: Path) -> None:
    with empty_databases(kind, tmp_path, "created", "upgraded") as urls:
        created, upgraded = (db.make_engine(url) for url in urls)
        try:
            db.create_schema(created)  # what bootstrap, `optflow init` and `optflow serve` do
            report = migrations.upgrade(upgraded)  # every revision from the first: `optflow db upgrade`
            assert report.before.empty and report.after == (migrations.head(),)
            for engine in (created, upgraded):
                assert migrations.current_state(engine).at_head
                with engine.connect() as conn:
                    differences = schema_differences(conn, orm.metadata)
                assert differences == [], (
                    "orm.py and the migration revisions differ; write a revision for the change with "
                    f"`make revision m=\"...\"` (see docs/upgrading.md):\n{differences}")
            assert described(created) == described(upgraded)
        finally:
            created.dispose()
            upgraded.dispose()


def test_a_change_to_orm_without_a_revision_is_reported(empty_engine: Engine) -> None:
    """The comparison above can fail: a column, an index and a nullability that orm.py would
    declare without a revision are each found."""
    migrations.upgrade(empty_engine)
    changed = MetaData()
    for table in orm.metadata.sorted_tables:
        table.to_metadata(changed)
    contacts = changed.tables["contacts"]
    contacts.append_column(Column("locale", String, nullable=True))
    Index("ix_contacts_name", contacts.c.name)
    changed.tables["consents"].c.method.nullable = False
    with empty_engine.connect() as conn:
        found = schema_differences(conn, changed)
    flat = [d for difference in found for d in (difference if isinstance(difference, list) else [difference])]
    assert {(d[0], d[2] if d[0] != "add_index" else d[1].name) for d in flat} == {
        ("add_column", "contacts"), ("add_index", "ix_contacts_name"), ("modify_nullable", "consents")}


def test_the_revision_history_is_one_line_from_the_baseline() -> None:
    history = list(migrations.scripts().walk_revisions())
    assert history[-1].revision == migrations.BASELINE and history[-1].down_revision is None
    assert history[0].revision == migrations.head()
    assert all(newer.down_revision == older.revision for newer, older in itertools.pairwise(history))


# --------------------------------------------------------------- a database behind, ahead, half-made


def fill(engine: Engine) -> None:
    """An org and a contact whose address and consents reference it."""
    from optflow.domain import commands as c
    from optflow.domain.model import Actor, ActorKind, Channel

    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "Acme", START, numbers=("+12025550123",), settings={"program_name": "Acme"})
        uow.commit()
    system = _system(engine)
    created = system.bus.handle(c.CreateContact(org_id, name="Sam", phones=("+14155552671",), emails=()))
    system.bus.handle(c.OptOut(org_id, created.contact_id, Channel.TEXT, Actor(ActorKind.AGENT, "test")))


def _system(engine: Engine) -> Any:
    from conftest import REPO, Clock, RecordingSender
    from optflow.bootstrap import bootstrap
    from optflow.config import Config

    return bootstrap(Config(database_url=str(engine.url), flows_dir=REPO / "flows", secret="test-secret"),
                     clock=Clock(START), sender=RecordingSender(), engine=engine, create_schema=False)


def columns(engine: Engine, tables: tuple[str, ...] | None = None) -> dict[str, tuple[str, ...]]:
    """The columns of the models' tables that the database has (an older revision has fewer)."""
    with engine.connect() as conn:
        inspector = inspect(conn)
        result = {}
        for table in orm.metadata.sorted_tables:
            if tables is None or table.name in tables:
                present = {column["name"] for column in inspector.get_columns(table.name)}
                result[table.name] = tuple(column.name for column in table.c if column.name in present)
        return result


def rows(engine: Engine, tables: tuple[str, ...] | None = None,
         only: dict[str, tuple[str, ...]] | None = None) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of the models' tables, in the columns the database has (or `only` those)."""
    names = only if only is not None else columns(engine, tables)
    with engine.connect() as conn:
        return {table.name: sorted(tuple(row) for row in conn.execute(select(*(table.c[n] for n in names[table.name]))))
                for table in orm.metadata.sorted_tables if table.name in names}


SHIPPED_HEAD = migrations.head()  # the newest revision this release ships
TEST_REVISION = '''
"""Test only: rebuilds `contacts` on SQLite (a nullability change), which addresses and consents reference."""
import sqlalchemy as sa
from alembic import op

revision = "9002"
down_revision = "{down}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:  # SQLite: copies the table; PostgreSQL: ALTERs
        batch.alter_column("name", existing_type=sa.String(), nullable=True)
        batch.add_column(sa.Column("locale", sa.String(), nullable=False, server_default="en"))
    {more}
'''


@pytest.fixture
def next_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Makes the code know one revision more than it ships (`9002`, after the head), with extra
    upgrade statements if given."""

    def add(more: str = "pass") -> None:
        scripts = tmp_path / "scripts"
        shutil.copytree(migrations.SCRIPT_LOCATION, scripts, ignore=shutil.ignore_patterns("__pycache__"))
        (scripts / "versions" / "9002_test_only.py").write_text(
            TEST_REVISION.format(down=migrations.head(), more=more))
        monkeypatch.setattr(migrations, "SCRIPT_LOCATION", scripts)
        migrations.scripts.cache_clear()

    yield add
    migrations.scripts.cache_clear()


def test_a_database_behind_the_code_is_refused_until_upgraded_and_keeps_its_rows(
        empty_engine: Engine, next_revision: Callable[[str], None]) -> None:
    db.create_schema(empty_engine)
    fill(empty_engine)
    before = rows(empty_engine)
    next_revision("pass")
    with pytest.raises(migrations.SchemaNotCurrent, match=rf"at revision {SHIPPED_HEAD} but this optflow needs 9002: "
                                                          r"back it up and run `optflow db upgrade`"):
        db.create_schema(empty_engine)

    report = migrations.upgrade(empty_engine)

    assert report.before.revisions == (SHIPPED_HEAD,) and report.after == ("9002",)
    db.create_schema(empty_engine)  # now accepted
    assert rows(empty_engine) == before  # orm's columns: every row, every value
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT DISTINCT locale FROM contacts")).scalars().all() == ["en"]
        if empty_engine.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1  # switched back on
            assert "REFERENCES contacts" in conn.exec_driver_sql(
                "SELECT sql FROM sqlite_master WHERE name = 'consents'").scalar()


def test_a_failed_upgrade_changes_nothing(empty_engine: Engine, next_revision: Callable[[str], None]) -> None:
    db.create_schema(empty_engine)
    fill(empty_engine)
    before_rows, before_schema = rows(empty_engine), described(empty_engine)
    next_revision('op.execute("UPDATE no_such_table SET x = 1")')

    with pytest.raises(Exception, match="no_such_table"):
        migrations.upgrade(empty_engine)

    assert migrations.current_state(empty_engine).revisions == (SHIPPED_HEAD,)
    assert described(empty_engine) == before_schema and rows(empty_engine) == before_rows


def test_a_database_ahead_of_the_code_is_refused_and_left_alone(empty_engine: Engine, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    db.create_schema(empty_engine)
    with empty_engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9002'"))  # a newer optflow's revision
    for attempt in (db.create_schema, migrations.upgrade):
        with pytest.raises(migrations.SchemaNotCurrent, match=r"at revision 9002, which this optflow does not "
                                                              r"know .* a newer optflow upgraded it; run that version"):
            attempt(empty_engine)
    assert migrations.current_state(empty_engine).revisions == ("9002",)


def test_a_database_before_migrations_is_refused_then_adopted(empty_engine: Engine) -> None:
    """How optflow created its schema before it had migrations: revision 0001's tables, no
    `alembic_version` (tests/integration/test_upgrade_from_before_migrations.py does it with the
    old code itself)."""
    from alembic import command

    with empty_engine.begin() as conn:
        command.upgrade(migrations.alembic_config(conn), "0001")
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(text("INSERT INTO orgs (id, name, settings_json, created_at) "
                          "VALUES (1, 'Acme', '{}', '2026-11-01 09:00:00')"))
        conn.execute(text("INSERT INTO contacts (id, org_id, name, active, do_not_call, dnd_all, dnd_channels, "
                          "marketing_allowed, fields_json, created_at, updated_at) VALUES (1, 1, 'Sam', TRUE, FALSE, "
                          "FALSE, '', TRUE, '{}', '2026-11-01 09:00:00', '2026-11-01 09:00:00')"))
    old_columns = columns(empty_engine, ("orgs", "contacts"))
    before = rows(empty_engine, only=old_columns)
    with pytest.raises(migrations.SchemaNotCurrent, match=r"no schema revision .* run `optflow db upgrade`"):
        db.create_schema(empty_engine)

    report = migrations.upgrade(empty_engine)

    assert report.before.unversioned and report.after == (migrations.head(),)
    assert rows(empty_engine, only=old_columns) == before  # later revisions add columns, change no value
    with empty_engine.connect() as conn:
        assert schema_differences(conn, orm.metadata) == []


def test_a_half_made_database_is_not_adopted(empty_engine: Engine) -> None:
    orm.metadata.create_all(empty_engine, tables=[orm.orgs, orm.contacts])
    with pytest.raises(migrations.SchemaError, match="missing addresses, agents, app_meta, consents"):
        migrations.upgrade(empty_engine)
    assert set(inspect(empty_engine).get_table_names()) == {"orgs", "contacts"}
