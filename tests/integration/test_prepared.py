"""Statements run through the driver (`Prepared`, `Savepoint`) behave exactly like the same
statements through SQLAlchemy's `Connection.execute`, on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import DateTime, Engine, bindparam, insert, select, update
from sqlalchemy.dialects import sqlite
from sqlalchemy.exc import IntegrityError

from optflow.adapters import orm
from optflow.adapters.orm import UtcDateTime
from optflow.adapters.prepared import Prepared, Savepoint, bind_list, bind_values

NOW = datetime(2026, 11, 23, 18, 0, 0, 123456, tzinfo=UTC)

_CONSENT = select(orm.consents).where(orm.consents.c.id == bindparam("w_id"))
_INSERT_CONSENT = insert(orm.consents)


def _org(conn) -> int:  # type: ignore[no-untyped-def]
    return int(conn.execute(insert(orm.orgs).values(name="Acme", settings_json="{}", created_at=NOW))
               .inserted_primary_key[0])


def _consent_values(org_id: int, address: str) -> dict[str, object]:
    return {"org_id": org_id, "address": address, "channel": "text", "state": "opted_in", "awaiting_pin": True,
            "opted_in_at": NOW, "version": 1, "opt_out_confirmation_sent": False, "updated_at": NOW}


def test_rows_come_back_as_through_sqlalchemy(engine: Engine) -> None:
    with engine.connect() as conn, conn.begin():
        org = _org(conn)
        new = Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550100"))
        through_driver = Prepared(_CONSENT).first(conn, {"w_id": new})
        through_sqlalchemy = dict(conn.execute(_CONSENT, {"w_id": new}).mappings().one())
        assert through_driver == through_sqlalchemy
        assert through_driver is not None
        assert through_driver["opted_in_at"] == NOW  # aware UTC, microseconds kept
        assert through_driver["awaiting_pin"] is True  # a bool, not SQLite's 1
        assert Prepared(_CONSENT).rows(conn, {"w_id": new}) == [through_sqlalchemy]
        assert Prepared(select(orm.consents.c.address).where(orm.consents.c.id == bindparam("w_id"))) \
            .scalar(conn, {"w_id": new}) == "+14155550100"
        assert Prepared(_CONSENT).first(conn, {"w_id": new + 1}) is None


def test_inserts_fill_scalar_column_defaults_and_updates_count_rows(engine: Engine) -> None:
    with engine.connect() as conn, conn.begin():
        org = _org(conn)
        message = Prepared(insert(orm.messages)).insert(conn, {
            "org_id": org, "direction": "in", "channel": "text", "address": "+14155550100", "body": "hi",
            "status": "received", "created_at": NOW})
        row = conn.execute(select(orm.messages).where(orm.messages.c.id == message)).mappings().one()
        assert (row["audience"], row["purpose"], row["kind"], row["attempts"]) == \
            ("customer", "conversational", "normal", 0)
        change = Prepared(update(orm.messages).where(orm.messages.c.id == bindparam("w_id")))
        assert change.execute(conn, {"w_id": message, "status": "delivered"}) == 1
        assert change.execute(conn, {"w_id": message + 1, "status": "delivered"}) == 0
        assert conn.execute(select(orm.messages.c.status)).scalar() == "delivered"


def test_fixed_length_in_lists(engine: Engine) -> None:
    with engine.connect() as conn, conn.begin():
        org = _org(conn)
        for address in ("+14155550100", "+14155550101", "+14155550102"):
            Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, address))
        two = Prepared(select(orm.consents.c.address).where(orm.consents.c.address.in_(bind_list("w_a", 2)))
                       .order_by(orm.consents.c.address))
        rows = two.rows(conn, bind_values("w_a", ["+14155550102", "+14155550100"]))
        assert [r["address"] for r in rows] == ["+14155550100", "+14155550102"]


def test_driver_errors_are_sqlalchemy_errors(engine: Engine) -> None:
    """The group commit retries on `sqlalchemy.exc.IntegrityError`; a driver error must arrive as one."""
    with engine.connect() as conn, conn.begin():
        org = _org(conn)
        Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550100"))
        with pytest.raises(IntegrityError), Savepoint(conn):
            Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550100"))
        # The transaction goes on after the savepoint rolled back (PostgreSQL would refuse otherwise).
        assert conn.execute(select(orm.consents.c.id)).scalars().all() != []


def test_statements_it_cannot_run_are_refused_with_a_reason(engine: Engine) -> None:
    expanding = Prepared(select(orm.consents).where(orm.consents.c.address.in_(bindparam("w", expanding=True))))
    with engine.connect() as conn, conn.begin(), pytest.raises(TypeError, match="expanding"):
        expanding.rows(conn, {"w": ["+14155550100"]})
    with engine.connect() as conn, conn.begin(), pytest.raises(TypeError, match="w_id"):
        Prepared(_CONSENT).first(conn, {})


def test_savepoints_keep_or_undo_their_part_of_the_transaction(engine: Engine) -> None:
    with engine.connect() as conn:
        with conn.begin():
            org = _org(conn)
            with Savepoint(conn):
                Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550100"))
            with pytest.raises(RuntimeError), Savepoint(conn):
                Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550101"))
                raise RuntimeError("undo this one")
            undone = Savepoint(conn).begin()
            Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550102"))
            undone.rollback()
            kept = Savepoint(conn).begin()
            Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550103"))
            kept.commit()
        with conn.begin():
            stored = conn.execute(select(orm.consents.c.address).order_by(orm.consents.c.address)).scalars().all()
    assert stored == ["+14155550100", "+14155550103"]


def test_nested_savepoints_undo_only_their_own_part(engine: Engine) -> None:
    """Savepoints are named by depth: the inner ones of two commands share a name, and each
    release or roll back still reaches the newest one (its own)."""
    with engine.connect() as conn:
        with conn.begin():
            org = _org(conn)
            with Savepoint(conn) as outer:
                Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550110"))
                with pytest.raises(RuntimeError), Savepoint(conn) as inner:
                    Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550111"))
                    raise RuntimeError("undo the inner one")
                with Savepoint(conn) as second:
                    Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550112"))
                assert inner.name == second.name != outer.name
            with pytest.raises(RuntimeError), Savepoint(conn) as again:
                Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550113"))
                with Savepoint(conn):
                    Prepared(_INSERT_CONSENT).insert(conn, _consent_values(org, "+14155550114"))
                raise RuntimeError("undo the outer one, and the inner one kept inside it")
            assert again.name == outer.name
        with conn.begin():
            stored = conn.execute(select(orm.consents.c.address).order_by(orm.consents.c.address)).scalars().all()
    assert stored == ["+14155550110", "+14155550112"]


def test_many_rows_in_one_driver_call(engine: Engine) -> None:
    with engine.connect() as conn, conn.begin():
        org = _org(conn)
        rows = [{"org_id": org, "direction": "out", "channel": "text", "address": f"+1415555010{n}", "body": f"#{n}",
                 "status": "queued", "created_at": NOW} for n in range(3)]
        Prepared(insert(orm.messages)).executemany(conn, rows)
        Prepared(insert(orm.messages)).executemany(conn, [])
        stored = conn.execute(select(orm.messages).order_by(orm.messages.c.id)).mappings().all()
        assert [(r["body"], r["kind"], r["created_at"]) for r in stored] == [(f"#{n}", "normal", NOW) for n in range(3)]
        change = Prepared(update(orm.messages).where(orm.messages.c.id == bindparam("w_id")))
        change.executemany(conn, [{"w_id": r["id"], "status": "sent"} for r in stored[:2]])
        assert conn.execute(select(orm.messages.c.status).order_by(orm.messages.c.id)).scalars().all() == \
            ["sent", "sent", "queued"]
        with pytest.raises(IntegrityError), Savepoint(conn):
            Prepared(_INSERT_CONSENT).executemany(conn, [_consent_values(org, "+14155550100")] * 2)


def test_sqlite_datetimes_are_stored_as_sqlalchemys_datetime_text() -> None:
    """UtcDateTime converts in one step on SQLite; the text must be exactly SQLAlchemy's, so SQL
    comparisons between old and new rows (`next_run_at <= ?`) keep their order."""
    dialect = sqlite.dialect()
    standard_bind = DateTime().dialect_impl(dialect).bind_processor(dialect)
    standard_result = DateTime().dialect_impl(dialect).result_processor(dialect, None)
    ours_bind = UtcDateTime().bind_processor(dialect)
    ours_result = UtcDateTime().result_processor(dialect, None)
    assert standard_bind is not None and standard_result is not None
    rng = random.Random(5)
    for _ in range(500):
        value = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randint(0, 10**9),
                                                              microseconds=rng.choice([0, rng.randint(0, 999_999)]))
        text = ours_bind(value)
        assert text == standard_bind(value.replace(tzinfo=None))
        assert ours_result(text) == value == standard_result(text).replace(tzinfo=UTC)
    assert ours_result("2026-01-05 12:00:00") == datetime(2026, 1, 5, 12, tzinfo=UTC)  # written without microseconds
    with pytest.raises(ValueError, match="naive"):
        ours_bind(datetime(2026, 1, 5, 12))
    # The last conversion is remembered: repeated values, and a naive twin of the last one.
    moment = datetime(2026, 1, 5, 12, tzinfo=UTC)
    assert ours_bind(moment) == ours_bind(moment) == "2026-01-05 12:00:00.000000"
    assert ours_bind(moment.astimezone(timezone(timedelta(hours=-5)))) == "2026-01-05 12:00:00.000000"
    with pytest.raises(ValueError, match="naive"):
        ours_bind(moment.replace(tzinfo=None))
    assert ours_result("2026-01-05 12:00:00.000000") == ours_result("2026-01-05 12:00:00.000000") == moment
