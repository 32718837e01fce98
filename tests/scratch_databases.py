"""Empty databases for tests that must start from nothing (schema creation and upgrades): a
SQLite file, or a PostgreSQL database of their own beside the shared test database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from conftest import postgres_url_or_skip


@contextmanager
def empty_databases(kind: str, tmp_path: Path, *names: str) -> Iterator[list[str]]:
    """One URL per name, each an empty database of `kind` (sqlite | postgres), dropped afterwards
    (PostgreSQL; SQLite files go with tmp_path). Dispose of engines on them before leaving."""
    if kind == "sqlite":
        yield [f"sqlite:///{tmp_path / name}.db" for name in names]
        return
    base = make_url(postgres_url_or_skip())
    databases = [f"{base.database}_{name}" for name in names]
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            for database in databases:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
                conn.execute(text(f'CREATE DATABASE "{database}"'))
        yield [base.set(database=database).render_as_string(hide_password=False) for database in databases]
        with admin.connect() as conn:
            for database in databases:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    finally:
        admin.dispose()
