"""CRM changes in and bulk imports, spoken to in commands: the upsert by external id, the
declined marketing permission on record, imported consents dated as given, the suppression list."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text

from conftest import Clock, RecordingSender, make_system, new_agent, new_org
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Actor, ActorKind, Channel, DomainError, Purpose, State, TransitionRefused
from optflow.service_layer import imports

PHONE = "+14155552671"
EMAIL = "sam@example.com"
GIVEN = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender) -> System:
    """On SQLite and on PostgreSQL (when one is configured)."""
    return make_system(engine, clock, sender)


@pytest.fixture
def org(system: System) -> int:
    return new_org(system)


@pytest.fixture
def crm(system: System, org: int) -> Actor:
    agent = new_agent(system, org, role="integration", name="Salesforce sync")
    return imports.actor_of_token(agent.id, "integration")


def ledger(system: System, org: int) -> list[dict[str, Any]]:
    with system.bus.uow(read_only=True) as uow:
        return uow.ledger.entries(org)


def consent(system: System, org: int, address: str = PHONE, channel: Channel = Channel.TEXT) -> Any:
    with system.bus.uow(read_only=True) as uow:
        return uow.consents.get(org, address, channel)


def upsert(system: System, org: int, actor: Actor, external_id: str = "CRM-1", **changes: Any) -> imports.Upserted:
    return system.bus.handle(c.UpsertContact(org, external_id, actor, **changes))  # type: ignore[no-any-return]


def consent_row(system: System, org: int, actor: Actor, **values: str) -> imports.Imported:
    row = {"channel": "text", "state": "opted_in", "method": "web_form", "occurred_at": GIVEN.isoformat(),
           "phone": PHONE, **values}
    return system.bus.handle(imports.consent_command(row, org, actor))  # type: ignore[no-any-return]


# ------------------------------------------------------------------------------------ upsert


def test_a_contact_created_with_marketing_declined_leaves_a_ledger_entry(system: System, org: int) -> None:
    contact_id = system.bus.handle(c.CreateContact(org, name="Lead", phones=(PHONE,), marketing_allowed=False)
                                   ).contact_id
    [entry] = [e for e in ledger(system, org) if e["trigger"] == "marketing_off"]
    assert (entry["contact_id"], entry["from_state"], entry["to_state"]) == (contact_id, "marketing:unset",
                                                                           "marketing:off")
    system.bus.handle(c.CreateContact(org, name="Other", phones=("+14155552672",)))
    assert [e["trigger"] for e in ledger(system, org)] == ["marketing_off"]  # marketing allowed: nothing to record


def test_upsert_creates_then_updates_then_changes_nothing(system: System, org: int, crm: Actor) -> None:
    created = upsert(system, org, crm, name="Sam", phones=(PHONE,), marketing_allowed=False)
    assert created.created and created.changed
    [entry] = ledger(system, org)
    assert (entry["trigger"], entry["actor_kind"], entry["actor_id"]) == ("marketing_off", "integration", crm.id)

    updated = upsert(system, org, crm, name="Sam Jones", emails=(EMAIL,), marketing_allowed=True)
    assert (updated.contact_id, updated.created, updated.changed) == (created.contact_id, False, True)
    with system.bus.uow(read_only=True) as uow:
        contact = uow.contacts.get(org, created.contact_id)
        assert (contact.name, contact.marketing_allowed, contact.external_id) == ("Sam Jones", True, "CRM-1")
        assert {a.value for a in uow.contacts.addresses(contact.id)} == {PHONE, EMAIL}
    assert [e["trigger"] for e in ledger(system, org)] == ["marketing_off", "marketing_on"]

    again = upsert(system, org, crm, name="Sam Jones", phones=(PHONE,), emails=(EMAIL,), marketing_allowed=True)
    assert (again.created, again.changed) == (False, False)
    assert len(ledger(system, org)) == 2


def test_upsert_adopts_a_contact_without_external_id_and_refuses_another_ones_address(
        system: System, org: int, crm: Actor) -> None:
    existing = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    assert upsert(system, org, crm, phones=(PHONE,)).contact_id == existing
    with pytest.raises(TransitionRefused) as refused:
        upsert(system, org, crm, external_id="CRM-2", phones=(PHONE,))
    assert refused.value.code == "address_taken"


# ------------------------------------------------------------------------------------ consents


def test_an_imported_consent_is_dated_as_given_and_a_second_import_records_nothing(
        system: System, org: int, crm: Actor, clock: Clock) -> None:
    first = consent_row(system, org, crm, external_id="CRM-9", name="Pat", evidence="form #12", source="webinar")
    assert first.skipped is None and first.contact_id is not None
    stored = consent(system, org)
    assert (stored.state, stored.opted_in_at, stored.method) == (State.OPTED_IN, GIVEN, "web_form")
    [entry] = ledger(system, org)
    assert (entry["occurred_at"], entry["recorded_at"]) == (GIVEN, clock())
    assert (entry["actor_kind"], entry["evidence"]) == ("integration", "source: webinar; form #12")

    clock.advance(hours=1)
    again = consent_row(system, org, crm, external_id="CRM-9", name="Pat", evidence="form #12", source="webinar")
    assert again.skipped is not None and again.contact_id == first.contact_id
    assert len(ledger(system, org)) == 1


def test_an_import_does_not_reopen_a_later_opt_out_and_an_imported_opt_out_always_applies(
        system: System, org: int, crm: Actor) -> None:
    consent_row(system, org, crm, state="opted_out", occurred_at="2026-04-01T00:00:00Z")
    with pytest.raises(DomainError) as refused:
        consent_row(system, org, crm)  # a consent of 1 March after an opt-out of 1 April
    assert refused.value.code == "opted_out"
    assert consent(system, org).state is State.OPTED_OUT
    assert consent(system, org).opted_out_at == datetime(2026, 4, 1, tzinfo=UTC)

    consent_row(system, org, crm, phone="+14155552672")
    out = consent_row(system, org, crm, phone="+14155552672", state="opted_out", occurred_at="2026-02-01")
    assert out.skipped is None  # an opt-out older than the consent on record still applies
    assert consent(system, org, "+14155552672").state is State.OPTED_OUT
    assert consent_row(system, org, crm, phone="+14155552672", state="opted_out",
                       occurred_at="2026-02-01").skipped == "already opted out"
    assert [e["to_state"] for e in ledger(system, org)] == ["opted_out", "opted_in", "opted_out"]


def test_an_import_refuses_a_method_the_org_does_not_know_and_a_date_to_come(
        system: System, org: int, crm: Actor, clock: Clock) -> None:
    with pytest.raises(DomainError) as refused:
        consent_row(system, org, crm, method="carrier_pigeon")
    assert refused.value.code == "unknown_method"
    with pytest.raises(DomainError) as future:
        consent_row(system, org, crm, occurred_at=(clock() + timedelta(days=1)).isoformat())
    assert future.value.code == "occurred_in_future"
    assert ledger(system, org) == []


# ------------------------------------------------------------------------------------ suppressions


def test_a_suppressed_address_is_never_messaged_nor_opted_in_by_an_import(
        system: System, org: int, crm: Actor) -> None:
    contact_id = consent_row(system, org, crm, name="Sam").contact_id
    assert contact_id is not None
    system.bus.handle(c.AddSuppression(org, crm, "(415) 555-2671", "litigator list"))
    with pytest.raises(DomainError) as denied:
        system.bus.handle(c.SendMessage(org, contact_id, Channel.TEXT, "Hello", crm, purpose=Purpose.CONVERSATIONAL))
    assert denied.value.code == "suppressed"
    with pytest.raises(DomainError) as refused:
        consent_row(system, org, crm, phone="+14155552671", occurred_at="2026-05-01T00:00:00Z")
    assert refused.value.code == "suppressed"
    again = system.bus.handle(c.AddSuppression(org, crm, PHONE, "litigator list"))
    assert again.skipped == "already suppressed"
    entries = [e for e in ledger(system, org) if e["trigger"] == "suppressed"]
    assert [(e["address"], e["channel"], e["evidence"]) for e in entries] == [(PHONE, "all", "litigator list")]


def test_a_suppression_on_one_channel_leaves_the_others(system: System, org: int, crm: Actor) -> None:
    contact_id = consent_row(system, org, crm, name="Sam", email=EMAIL).contact_id
    consent_row(system, org, crm, channel="email", email=EMAIL)
    system.bus.handle(c.AddSuppression(org, crm, PHONE, "complaint", Channel.TEXT))
    assert contact_id is not None
    queued = system.bus.handle(c.SendMessage(org, contact_id, Channel.EMAIL, "Hello", crm))
    assert queued.status == "queued"


def test_an_agent_and_an_integration_appear_as_themselves(system: System, org: int) -> None:
    agent = new_agent(system, org)
    assert imports.actor_of_token(agent.id, "agent") == Actor(ActorKind.AGENT, str(agent.id), "agent")
    assert imports.actor_of_token(7, "integration").kind is ActorKind.INTEGRATION


def test_a_message_queued_before_the_suppression_is_cancelled_and_never_handed_over(
        system: System, org: int, crm: Actor, sender: RecordingSender) -> None:
    contact_id = consent_row(system, org, crm, name="Sam").contact_id
    assert contact_id is not None
    queued = system.bus.handle(c.SendMessage(org, contact_id, Channel.TEXT, "Your car is ready", crm))
    assert queued.status == "queued"
    system.bus.handle(c.AddSuppression(org, crm, PHONE, "asked never to be texted", Channel.TEXT))
    system.dispatcher.run(system.clock())
    assert sender.to(PHONE) == []
    with system.bus.uow(read_only=True) as uow:
        message = uow.messages.get(queued.message_id)
    assert message is not None and message.status.value == "cancelled"


def test_an_import_file_is_read_in_batches_with_its_rows_lines(system: System, org: int, crm: Actor) -> None:
    lines = ["phone,channel,state,method,occurred_at\n"]
    lines += [f"+1415555{2700 + i:04d},text,opted_in,web_form,2026-01-0{1 + i % 9}\n" for i in range(7)]
    lines.insert(3, "\n")  # a blank line is passed over, and the lines after it keep their numbers
    lines.append("+14155552799,text,opted_in,web_form\n")  # a field too few
    tally = imports.Tally()
    outcomes = []
    for batch in imports.batches(imports.read_rows(lines, "consents"), size=3):
        outcomes += imports.import_batch(system.bus, "consents", org, crm, batch, tally)
    assert (tally.rows, tally.imported, tally.rejected) == (8, 7, 1)
    assert [row.line for row, _, _ in outcomes] == [2, 3, 5, 6, 7, 8, 9, 10]
    assert outcomes[-1][2] is not None and "4 fields where the header has 5" in outcomes[-1][2]


def test_a_nul_in_an_imported_row_is_stored_as_a_replacement_character(system: System, org: int,
                                                                       crm: Actor) -> None:
    lines = ["name,phone,channel,state,method,occurred_at,evidence\n",
             "Sa\x00m,+14155552671,text,opted_in,web_form,2026-01-01,scan\x00ned form\n"]
    tally = imports.Tally()
    imports.import_batch(system.bus, "consents", org, crm, list(imports.read_rows(lines, "consents")), tally)
    assert tally.imported == 1
    [entry] = ledger(system, org)
    assert entry["evidence"] == "scan\ufffdned form"


def test_an_import_adopts_a_contact_without_external_id_and_refuses_another_ones_address(
        system: System, org: int, crm: Actor) -> None:
    existing = system.bus.handle(c.CreateContact(org, name="Sam", phones=(PHONE,))).contact_id
    assert consent_row(system, org, crm, external_id="CRM-7").contact_id == existing
    with system.bus.uow(read_only=True) as uow:
        assert uow.contacts.get(org, existing).external_id == "CRM-7"
    with pytest.raises(TransitionRefused) as refused:
        consent_row(system, org, crm, external_id="CRM-8", occurred_at="2026-06-01T00:00:00Z")
    assert refused.value.code == "address_taken"
    assert [e["trigger"] for e in ledger(system, org)] == ["record_opt_in"]


def test_only_a_supervisor_with_evidence_imports_a_consent_given_after_an_opt_out(
        system: System, org: int, crm: Actor) -> None:
    supervisor = Actor(ActorKind.AGENT, str(new_agent(system, org, role="supervisor", name="Sue").id), "supervisor")
    consent_row(system, org, crm, state="opted_out", occurred_at="2026-02-01T00:00:00Z")
    for actor in (crm, Actor(ActorKind.AGENT, str(new_agent(system, org, name="Al").id), "agent")):
        with pytest.raises(DomainError) as refused:
            consent_row(system, org, actor, occurred_at="2026-03-01T00:00:00Z", evidence="signed form")
        assert refused.value.code == "opted_out"
    with pytest.raises(DomainError) as older:
        consent_row(system, org, supervisor, occurred_at="2026-01-01T00:00:00Z", evidence="signed form")
    assert older.value.code == "consent_before_opt_out"
    consent_row(system, org, supervisor, occurred_at="2026-03-01T00:00:00Z", evidence="signed form")
    assert consent(system, org).state is State.OPTED_IN
    assert [e["actor_id"] for e in ledger(system, org)] == [crm.id, supervisor.id]


JOB_FILE = ("phone,channel,state,method,occurred_at\n"
            "+14155552671,text,opted_in,web_form,2026-01-01\n"
            "+14155552672,text,opted_in,web_form,2026-01-02\n"
            "+14155552673,text,opted_in,web_form,2026-01-03\n"
            "+14155552674,text,opted_in,carrier_pigeon,2026-01-04\n"
            "+14155552675,text,opted_out,,2026-01-05\n")


def test_an_api_job_runs_in_batches_and_a_dead_worker_s_job_goes_on_from_its_last_batch(
        system: System, org: int, crm: Actor, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imports, "BATCH_ROWS", 2)
    agent = new_agent(system, org, role="integration", name="CRM")
    with system.bus.uow() as uow:
        job_id = uow.import_jobs.add(org, agent.id, "consents", JOB_FILE, imports.count_rows(JOB_FILE, "consents"),
                                     clock(), header=imports.header_of(JOB_FILE))
        uow.commit()
    # A worker took it, imported the first batch, wrote its progress, and died.
    first = list(imports.read_rows(JOB_FILE.splitlines(keepends=True), "consents"))[:2]
    imports.import_batch(system.bus, "consents", org, crm, first, imports.Tally())
    with system.bus.uow() as uow:
        assert uow.import_jobs.claim(clock(), clock() + imports.JOB_LEASE, False) is not None
        uow.import_jobs.progress(job_id, rows_done=2, imported=2, skipped=0, rejected=0,
                                 lease_until=clock() + imports.JOB_LEASE)
        uow.commit()
    assert imports.run_import_jobs(system.bus, clock) == 0  # its lease still holds

    clock.advance(minutes=6)
    assert imports.run_import_jobs(system.bus, clock) == 1

    with system.bus.uow(read_only=True) as uow:
        job = uow.import_jobs.get(org, job_id)
        rejects = list(uow.import_jobs.rejects(job_id))
    assert job is not None
    assert (job.status, job.rows_total, job.rows_done, job.imported, job.skipped, job.rejected) == (
        "done", 5, 5, 4, 0, 1)
    assert [(r.line, r.fields[0]) for r in rejects] == [(5, "+14155552674")] and "carrier_pigeon" in rejects[0].reason
    assert [e["to_state"] for e in ledger(system, org)] == ["opted_in", "opted_in", "opted_in", "opted_out"]
    assert ledger(system, org)[2]["actor_kind"] == "integration"
    with system.engine.connect() as conn:
        assert conn.execute(text(f"SELECT source FROM import_jobs WHERE id = {job_id}")).scalar() == ""
