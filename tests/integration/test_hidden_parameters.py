"""A database error names its statement but never its parameters: they hold message text and
phone numbers, and such errors end up in logs (the bus, the batcher and the dispatcher log them)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from optflow.adapters import orm
from optflow.adapters.unit_of_work import SqlUnitOfWork

PHONE = "+14155552671"
BODY = "STOP texting me, this is Sam Smith"
NOW = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)


def message(**values: Any) -> dict[str, Any]:
    return {"org_id": 987654, "direction": "in", "audience": "customer", "channel": "text", "address": PHONE,
            "body": BODY, "purpose": "conversational", "kind": "normal", "status": "received", "created_at": NOW,
            **values}


def assert_hidden(error: IntegrityError) -> None:
    dump = f"{error}\n{error!r}"
    assert "INSERT INTO messages" in dump
    assert "parameters hidden" in dump
    assert PHONE not in dump and BODY not in dump


def test_an_integrity_error_of_a_prepared_statement_hides_its_parameters(engine: Engine) -> None:
    with pytest.raises(IntegrityError) as raised, SqlUnitOfWork(engine) as uow:
        uow.messages.add(**message())  # no such org: the foreign key refuses it
    assert_hidden(raised.value)


def test_an_integrity_error_of_a_core_statement_hides_its_parameters(engine: Engine) -> None:
    with pytest.raises(IntegrityError) as raised, engine.begin() as conn:
        conn.execute(insert(orm.messages).values(**message()))
    assert_hidden(raised.value)
