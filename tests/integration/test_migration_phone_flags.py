"""Revision 0003 (Collect!'s per-phone Active and Do-Not-Call): existing phone records get the
flags their call and text consents give them, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import Engine, text

from optflow.adapters import db, migrations
from scratch_databases import empty_databases

KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=KINDS)
def engine_at_0002(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with empty_databases(str(request.param), tmp_path, "phone_flags") as (url,):
        engine = db.make_engine(url)
        with engine.begin() as conn:
            command.upgrade(migrations.alembic_config(conn), "0002")
        yield engine
        engine.dispose()


def _consent(conn: object, address: str, channel: str, state: str, opted_in_at: str | None,
             opted_out_at: str | None) -> None:
    conn.execute(text(  # type: ignore[attr-defined]
        "INSERT INTO consents (org_id, contact_id, address, channel, state, awaiting_pin, opted_in_at, "
        "opted_out_at, version, opt_out_confirmation_sent, pin_attempts, updated_at) VALUES (1, 1, :a, :c, :s, FALSE, "
        ":i, :o, 1, FALSE, 0, '2026-11-10 09:00:00')"), {"a": address, "c": channel, "s": state, "i": opted_in_at,
                                            "o": opted_out_at})


def test_collect_phone_flags_are_filled_in_from_the_consents_on_upgrade(engine_at_0002: Engine) -> None:
    with engine_at_0002.begin() as conn:
        conn.execute(text("INSERT INTO orgs (id, name, settings_json, created_at) "
                          "VALUES (1, 'Acme', '{}', '2026-11-01 09:00:00')"))
        conn.execute(text("INSERT INTO contacts (id, org_id, name, active, do_not_call, dnd_all, dnd_channels, "
                          "marketing_allowed, fields_json, created_at, updated_at) VALUES (1, 1, 'Sam', FALSE, "
                          "FALSE, FALSE, '', TRUE, '{}', '2026-11-01 09:00:00', '2026-11-01 09:00:00')"))
        for value, kind in (("+14155550001", "phone"), ("+14155550002", "phone"), ("+14155550003", "phone"),
                            ("sam@example.com", "email")):
            conn.execute(text("INSERT INTO addresses (org_id, contact_id, kind, value) VALUES (1, 1, :k, :v)"),
                         {"k": kind, "v": value})
        # texts opted in, then calls opted out later: the later opt-out decides
        _consent(conn, "+14155550001", "text", "opted_in", "2026-11-02 09:00:00", None)
        _consent(conn, "+14155550001", "call", "opted_out", None, "2026-11-05 09:00:00")
        # texts opted in (re-authorisation now due): active
        _consent(conn, "+14155550002", "text", "reauth_due", "2026-11-03 09:00:00", None)
        # only an email consent and a requested call: nothing recorded, both flags stay off
        _consent(conn, "+14155550003", "call", "requested", None, None)
        _consent(conn, "sam@example.com", "email", "opted_in", "2026-11-02 09:00:00", None)

    migrations.upgrade(engine_at_0002)

    with engine_at_0002.connect() as conn:
        flags = {r.value: (bool(r.active), bool(r.do_not_call)) for r in conn.execute(
            text("SELECT value, active, do_not_call FROM addresses"))}
    assert flags == {"+14155550001": (False, True), "+14155550002": (True, False),
                     "+14155550003": (False, False), "sam@example.com": (False, False)}
