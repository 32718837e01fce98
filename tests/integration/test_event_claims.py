"""Two dispatchers claiming consent events at once on PostgreSQL (`FOR UPDATE SKIP LOCKED`): while
one holds a contact's first event, the other takes neither that event nor the contact's next one,
but does take other contacts' events; once the first is delivered, the next one is free."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, insert, text

from conftest import postgres_url_or_skip
from optflow.adapters import db, orm
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.domain.records import DeliveryStatus
from optflow.service_layer import admin

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
LEASE = NOW + timedelta(minutes=5)


@pytest.fixture
def postgres() -> Iterator[Engine]:
    engine = db.make_engine(postgres_url_or_skip())
    db.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(t.name for t in orm.metadata.sorted_tables)} "
                          "RESTART IDENTITY CASCADE"))
    yield engine
    engine.dispose()


def queue(engine: Engine, keys: list[str]) -> list[int]:
    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "Acme", NOW)
        endpoint = uow.event_endpoints.add(org_id, "http://127.0.0.1:9/", ("consent.changed",), "", "salt", NOW)
        ids = [uow.conn.execute(insert(orm.webhook_deliveries).values(
            org_id=org_id, url=endpoint.url, payload="{}", status=DeliveryStatus.QUEUED, attempts=0,
            next_attempt_at=NOW, created_at=NOW, endpoint_id=endpoint.id, event_type="consent.changed",
            event_id=f"e{n}", ordering_key=key, give_up_at=NOW + timedelta(days=1))).inserted_primary_key[0]
            for n, key in enumerate(keys)]
        uow.commit()
    return [int(i) for i in ids]


def test_a_second_dispatcher_skips_a_contacts_events_while_the_first_holds_its_earliest(postgres: Engine) -> None:
    sam_1, kim_1, sam_2 = queue(postgres, ["contact:1", "contact:2", "contact:1"])
    with SqlUnitOfWork(postgres) as first:
        held = first.webhook_deliveries.claim_due(NOW, LEASE, 1, skip_locked=True)
        assert [row.id for row in held] == [sam_1]
        with SqlUnitOfWork(postgres) as second:  # while the first has not committed its claim
            taken = second.webhook_deliveries.claim_due(NOW, LEASE, 10, skip_locked=True)
            assert [row.id for row in taken] == [kim_1]
            second.commit()
        first.webhook_deliveries.record_attempt(sam_1, 1, NOW, 200, None, status=DeliveryStatus.DELIVERED,
                                                delivered_at=NOW)
        first.commit()
    with SqlUnitOfWork(postgres) as third:
        assert [row.id for row in third.webhook_deliveries.claim_due(NOW, LEASE, 10, skip_locked=True)] == [sam_2]
        third.commit()
