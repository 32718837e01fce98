"""The store on real SQLite and PostgreSQL: consents, addresses, the hash-chained ledger."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, delete, select, text, update

from conftest import START
from optflow.adapters import orm
from optflow.adapters.unit_of_work import SqlUnitOfWork
from optflow.domain.machine import TransitionContext, fire
from optflow.domain.model import CUSTOMER, Actor, ActorKind, Channel, State, Trigger
from optflow.domain.records import EnrollmentStatus
from optflow.service_layer import admin

AGENT = Actor(ActorKind.AGENT, "1")


def seed_ledger(engine: Engine, entries: int = 5) -> int:
    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "Acme", START)
        contact_id = uow.contacts.create(org_id, START, name="Sam")
        uow.contacts.add_address(org_id, contact_id, "phone", "+14155552671")
        consent = uow.consents.get(org_id, "+14155552671", Channel.TEXT)
        triggers = [Trigger.REQUEST_OPT_IN, Trigger.ACCEPT, Trigger.OPT_OUT, Trigger.ACCEPT, Trigger.OPT_OUT]
        for n, trigger in enumerate(triggers[:entries]):
            now = START + timedelta(minutes=n)
            record = fire(consent, trigger, TransitionContext(actor=AGENT if n == 0 else CUSTOMER, now=now,
                                                              method="keyword", evidence=f"message {n}"))
            consent.contact_id = contact_id
            uow.consents.save(consent, now)
            uow.ledger.append(org_id, contact_id, record)
        uow.commit()
    return org_id


def problems(engine: Engine, org_id: int) -> list[str]:
    with SqlUnitOfWork(engine) as uow:
        return [str(p) for p in uow.ledger.verify(org_id).problems]


def test_consent_round_trip_keeps_every_field(engine: Engine) -> None:
    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "Acme", START)
        consent = uow.consents.get(org_id, "+14155552671", Channel.TEXT)
        assert consent.state is State.UNKNOWN and consent.id is None
        fire(consent, Trigger.RECORD_OPT_IN, TransitionContext(
            actor=AGENT, now=START, occurred_at=START - timedelta(days=7), method="paper_form"))
        uow.consents.save(consent, START)
        uow.commit()
    with SqlUnitOfWork(engine) as uow:
        loaded = uow.consents.get(org_id, "+14155552671", Channel.TEXT)
    assert loaded.state is State.OPTED_IN
    assert loaded.opted_in_at == START - timedelta(days=7)
    assert loaded.opted_in_at.tzinfo is not None
    assert loaded.method == "paper_form" and loaded.version == 1


def test_a_transaction_left_without_commit_stores_nothing(engine: Engine) -> None:
    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "Acme", START)
        uow.commit()
    with SqlUnitOfWork(engine) as uow:
        uow.contacts.create(org_id, START, name="never stored")
    with SqlUnitOfWork(engine) as uow:
        assert uow.contacts.search(org_id) == []


def test_one_consent_per_address_and_channel(engine: Engine) -> None:
    from sqlalchemy.exc import IntegrityError

    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "Acme", START)
        uow.consents.save(uow.consents.get(org_id, "+14155552671", Channel.TEXT), START)
        uow.consents.save(uow.consents.get(org_id, "+14155552671", Channel.CALL), START)
        uow.commit()
    with SqlUnitOfWork(engine) as uow, pytest.raises(IntegrityError):  # a second row for the same key
        uow.conn.execute(orm.consents.insert().values(org_id=org_id, address="+14155552671", channel="text",
                                                      state="unknown", updated_at=START))


def test_intact_ledger_verifies(engine: Engine) -> None:
    org_id = seed_ledger(engine)
    assert problems(engine, org_id) == []


def test_ledger_entries_record_who_what_when_and_how(engine: Engine) -> None:
    org_id = seed_ledger(engine)
    with SqlUnitOfWork(engine) as uow:
        rows = uow.ledger.entries(org_id)
    assert [r["seq"] for r in rows] == [1, 2, 3, 4, 5]
    first = rows[0]
    assert (first["trigger"], first["from_state"], first["to_state"]) == ("request_opt_in", "unknown", "requested")
    assert (first["actor_kind"], first["actor_id"], first["channel"]) == ("agent", "1", "text")
    assert first["address"] == "+14155552671" and first["evidence"] == "message 0"
    assert rows[1]["prev_hash"] == first["hash"]


def test_verify_catches_an_edited_entry(engine: Engine) -> None:
    org_id = seed_ledger(engine)
    with engine.begin() as conn:
        conn.execute(update(orm.ledger).where(orm.ledger.c.seq == 3).values(to_state="opted_in"))
    found = problems(engine, org_id)
    assert any("seq 3" in p and "edited" in p for p in found), found


def test_verify_catches_an_edited_timestamp(engine: Engine) -> None:
    org_id = seed_ledger(engine)
    with engine.begin() as conn:
        conn.execute(update(orm.ledger).where(orm.ledger.c.seq == 2)
                     .values(occurred_at=START - timedelta(days=30)))
    assert any("seq 2" in p and "edited" in p for p in problems(engine, org_id))


def test_verify_catches_a_deleted_entry(engine: Engine) -> None:
    org_id = seed_ledger(engine)
    with engine.begin() as conn:
        conn.execute(delete(orm.ledger).where(orm.ledger.c.seq == 2))
    found = problems(engine, org_id)
    assert any("entries 2 are missing" in p for p in found), found


def test_verify_catches_a_deleted_newest_entry(engine: Engine) -> None:
    org_id = seed_ledger(engine)
    with engine.begin() as conn:
        conn.execute(delete(orm.ledger).where(orm.ledger.c.seq == 5))
    assert any("newest entries up to seq 5 are missing" in p for p in problems(engine, org_id))


def test_verify_catches_reordered_entries(engine: Engine) -> None:
    org_id = seed_ledger(engine)
    with engine.begin() as conn:
        conn.execute(update(orm.ledger).where(orm.ledger.c.seq == 2).values(seq=99))
        conn.execute(update(orm.ledger).where(orm.ledger.c.seq == 4).values(seq=2))
        conn.execute(update(orm.ledger).where(orm.ledger.c.seq == 99).values(seq=4))
    assert problems(engine, org_id)


def test_sqlite_runs_in_wal_mode(sqlite_engine: Engine) -> None:
    with sqlite_engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_every_lookup_path_has_an_index(engine: Engine) -> None:
    from sqlalchemy import inspect

    inspector = inspect(engine)

    def indexed(table: str, *columns: str) -> bool:
        keys = [tuple(i["column_names"]) for i in inspector.get_indexes(table)]
        keys += [tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)]
        return any(key[: len(columns)] == columns for key in keys)

    assert indexed("consents", "org_id", "address", "channel")
    assert indexed("addresses", "org_id", "value")
    assert indexed("messages", "org_id", "direction", "provider_id")
    assert indexed("messages", "status", "not_before")
    assert indexed("ledger", "org_id", "seq")
    assert indexed("ledger", "org_id", "contact_id")
    assert indexed("enrollments", "status", "next_run_at")
    assert indexed("enrollments", "contact_id", "status")
    assert indexed("org_numbers", "number")
    assert indexed("agents", "token_hash")


def test_sub_org_inherits_settings_key_by_key(engine: Engine) -> None:
    with SqlUnitOfWork(engine) as uow:
        parent = admin.create_org(uow, "Parent", START, settings={
            "program_name": "Parent alerts", "modes": {"text": "disclaimer", "email": "disclaimer"},
            "pin_required": True})
        child = admin.create_org(uow, "Child", START, parent_id=parent, settings={"modes": {"email": "consent"}})
        settings = uow.orgs.settings(child)
        uow.commit()
    assert settings.program_name == "Parent alerts" and settings.pin_required
    assert settings.mode(Channel.TEXT).value == "disclaimer"
    assert settings.mode(Channel.EMAIL).value == "consent"


def test_group_messaging_with_consent_mode_is_refused_and_nothing_changes(engine: Engine) -> None:
    from optflow.adapters.templates import TemplateRenderer
    from optflow.domain.model import InvalidInput

    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "Acme", START, settings={"program_name": "kept"})
        uow.commit()
    with SqlUnitOfWork(engine) as uow, pytest.raises(InvalidInput) as refused:
        admin.update_settings(uow, TemplateRenderer(), org_id, {"group_messaging": {"text": True},
                                                                "program_name": "changed"})
    assert "group messaging" in str(refused.value) and "consent mode" in str(refused.value)
    with SqlUnitOfWork(engine) as uow:
        assert uow.orgs.settings(org_id).program_name == "kept"
        row = uow.conn.execute(select(orm.orgs.c.settings_json).where(orm.orgs.c.id == org_id)).scalar()
    assert "changed" not in row


def test_an_inbound_message_is_stored_once_per_provider_id(engine: Engine) -> None:
    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "Acme", START)
        values = {"org_id": org_id, "channel": "text", "address": "+14155552671", "body": "STOP",
                  "status": "delivered", "created_at": START}
        first = uow.messages.add_inbound(provider_id="SM1", **values)
        assert first is not None
        assert uow.messages.add_inbound(provider_id="SM1", **{**values, "body": "again"}) is None
        assert uow.messages.add_inbound(provider_id=None, **values) is not None  # no id: never a replay
        assert uow.messages.add_inbound(provider_id=None, **values) is not None
        uow.commit()
    with SqlUnitOfWork(engine) as uow:
        stored = uow.messages.find_inbound(org_id, "SM1")
        assert stored is not None and stored.id == first and stored.body == "STOP"


def test_many_enrolments_end_together_with_their_history(engine: Engine) -> None:
    with SqlUnitOfWork(engine) as uow:
        org_id = admin.create_org(uow, "Acme", START)
        contact_id = uow.contacts.create(org_id, START, name="Sam")
        ids = [uow.enrollments.create(org_id, contact_id, f"flow_{n}", "v1", {}, START) for n in range(3)]
        uow.enrollments.end_many([(ids[0], 0), (ids[2], 1)], EnrollmentStatus.CANCELLED, "opted out of text", START)
        uow.enrollments.end_many([], EnrollmentStatus.CANCELLED, "nothing", START)
        uow.commit()
    with SqlUnitOfWork(engine) as uow:
        rows = {row.id: row for row in uow.enrollments.for_contact(
            contact_id, (EnrollmentStatus.ACTIVE, EnrollmentStatus.CANCELLED))}
        assert [rows[i].status for i in ids] == ["cancelled", "active", "cancelled"]
        assert rows[ids[2]].end_reason == "opted out of text" and rows[ids[2]].next_run_at is None
        assert [(h["pc"], h["step"], h["outcome"]) for h in uow.enrollments.history(ids[2])] == \
            [(1, "cancelled", "opted out of text")]
        assert uow.enrollments.history(ids[1]) == []
