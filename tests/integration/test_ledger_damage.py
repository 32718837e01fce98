"""A damaged ledger is found by `verify` and never blocks an opt-out (issue 10, hole 8).

Each test damages the ledger the way someone with write access to the database could (the
scenarios of the issue), on SQLite and PostgreSQL, and checks that verification reports it. The
ledger's key and checkpoint files live outside the database (here: the test's directory)."""

from __future__ import annotations

import asyncio
import logging
import stat
from pathlib import Path

import pytest
from sqlalchemy import Engine, delete, func, select, update

from conftest import ORG_NUMBER, Clock, RecordingSender, make_system, new_org
from optflow.adapters import ledger_files, orm
from optflow.adapters.repository import LedgerRepository
from optflow.adapters.unit_of_work import SqlUnitOfWork, SqlUnitOfWorkFactory
from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain import ledger as chain
from optflow.domain.model import Channel, State
from optflow.entrypoints.metrics import DatabaseCollector
from optflow.service_layer.ledger_audit import verify_ledger, write_checkpoints

PHONES = ["+14155552671", "+14155552672", "+14155552673"]


@pytest.fixture
def system(engine: Engine, clock: Clock, sender: RecordingSender, tmp_path: Path) -> System:
    return make_system(engine, clock, sender, data_dir=tmp_path)


@pytest.fixture
def org(system: System) -> int:
    return new_org(system)


def stop(system: System, phone: str, sid: str) -> None:
    system.bus.handle(c.ReceiveInbound(Channel.TEXT, phone, ORG_NUMBER, "STOP", sid))


def seed(system: System, clock: Clock) -> None:
    """Three opt-outs: three ledger entries."""
    for n, phone in enumerate(PHONES):
        clock.advance(minutes=1)
        stop(system, phone, f"SM{n}")


def problems(system: System) -> list[str]:
    return verify_ledger(system.uows).problems


def entries(engine: Engine, org_id: int) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(select(orm.ledger).where(orm.ledger.c.org_id == org_id).order_by(orm.ledger.c.seq))
        return [dict(r) for r in rows.mappings()]


def set_head(engine: Engine, org_id: int, seq: int) -> None:
    with engine.begin() as conn:
        head_hash = conn.execute(select(orm.ledger.c.hash).where(
            orm.ledger.c.org_id == org_id, orm.ledger.c.seq == seq)).scalar() or chain.GENESIS
        conn.execute(update(orm.ledger_heads).where(orm.ledger_heads.c.org_id == org_id)
                     .values(seq=seq, hash=head_hash))


def delete_head(engine: Engine, org_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(delete(orm.ledger_heads).where(orm.ledger_heads.c.org_id == org_id))


def delete_entries(engine: Engine, org_id: int, from_seq: int = 1) -> None:
    with engine.begin() as conn:
        conn.execute(delete(orm.ledger).where(orm.ledger.c.org_id == org_id, orm.ledger.c.seq >= from_seq))


# ------------------------------------------------------------------------------ keys


def test_entries_are_keyed_with_a_key_kept_outside_the_database(system: System, org: int, clock: Clock,
                                                                tmp_path: Path) -> None:
    seed(system, clock)
    files = ledger_files.attached(system.engine)
    assert files is not None and files.key_file is not None and files.key_file.parent == tmp_path
    assert stat.S_IMODE(files.key_file.stat().st_mode) == 0o600
    key = files.keyring.signing
    stored = entries(system.engine, org)
    assert [e["key_id"] for e in stored] == [key.key_id] * 3
    assert all(e["hash"] == chain.entry_hash(str(e["prev_hash"]), e, key) for e in stored)
    encoded = files.key_file.read_text().splitlines()[-1].partition(":")[2]
    with system.engine.connect() as conn:
        assert encoded not in [row.value for row in conn.execute(select(orm.app_meta))]
    assert problems(system) == []


def test_a_chain_recomputed_without_the_key_is_reported(system: System, org: int, clock: Clock) -> None:
    """Edit an entry and recompute every hash after it, with the old unkeyed algorithm or with a
    key of the attacker's own under the same key id: both fail without the real key."""
    seed(system, clock)
    stored = entries(system.engine, org)
    forged_key = chain.LedgerKey(str(stored[0]["key_id"]), b"guessed" * 5)
    for forge in ("unkeyed", "wrong key"):
        prev_hash = stored[0]["hash"]
        with system.engine.begin() as conn:
            for entry in stored[1:]:
                entry = {**entry, "prev_hash": prev_hash, "to_state": "opted_in"}
                if forge == "unkeyed":
                    entry["key_id"] = None
                    entry["hash"] = chain.entry_hash(str(prev_hash), entry)
                else:
                    entry["hash"] = chain.entry_hash(str(prev_hash), entry, forged_key)
                conn.execute(update(orm.ledger).where(orm.ledger.c.id == entry["id"]).values(
                    to_state="opted_in", prev_hash=prev_hash, hash=entry["hash"], key_id=entry["key_id"]))
                prev_hash = entry["hash"]
            conn.execute(update(orm.ledger_heads).where(orm.ledger_heads.c.org_id == org).values(hash=prev_hash))
        found = problems(system)
        expected = "rewritten with the unkeyed hash" if forge == "unkeyed" else "recomputed without the ledger key"
        assert [p for p in found if expected in p] and len(found) == 2, found


def test_a_whole_chain_rewritten_unkeyed_is_caught_by_a_checkpoint(system: System, org: int, clock: Clock) -> None:
    seed(system, clock)
    assert write_checkpoints(system.uows, clock()).written == 1
    prev_hash, stored = chain.GENESIS, entries(system.engine, org)
    with system.engine.begin() as conn:
        for entry in stored:
            entry = {**entry, "prev_hash": prev_hash, "key_id": None, "evidence": "forged"}
            entry["hash"] = prev_hash = chain.entry_hash(str(entry["prev_hash"]), entry)
            conn.execute(update(orm.ledger).where(orm.ledger.c.id == entry["id"]).values(
                prev_hash=entry["prev_hash"], hash=entry["hash"], key_id=None, evidence="forged"))
        conn.execute(update(orm.ledger_heads).where(orm.ledger_heads.c.org_id == org).values(hash=prev_hash))
    result = verify_ledger(system.uows)
    assert result.reports[0].unkeyed == 3
    assert len(result.problems) == 1 and "differs from the checkpoint" in result.problems[0]


def test_entries_from_before_ledger_keys_verify_as_unkeyed(engine: Engine, clock: Clock, sender: RecordingSender,
                                                         tmp_path: Path) -> None:
    """A database written before this change: its entries have no key id and a plain hash.
    They verify (counted as unkeyed); entries written after the upgrade are keyed."""
    legacy = make_system(engine, clock, sender, data_dir=tmp_path)
    org_id = new_org(legacy)
    with SqlUnitOfWork(engine) as uow:  # the unkeyed writer of old: a connection without ledger keys
        uow.conn.execution_options(**{ledger_files.EXECUTION_OPTION: None})
        uow.ledger.append_change(org_id, None, channel="text", address=PHONES[0], from_state="unknown",
                                 to_state="opted_out", trigger="opt_out", method="keyword", actor_kind="customer",
                                 occurred_at=clock(), recorded_at=clock())
        uow.commit()
    stop(legacy, PHONES[1], "SM-after")
    assert [e["key_id"] is None for e in entries(engine, org_id)] == [True, False]
    result = verify_ledger(SqlUnitOfWorkFactory(engine))
    assert result.problems == [] and result.reports[0].unkeyed == 1 and result.reports[0].entries == 2


def test_rotated_keys_all_verify_and_a_lost_key_is_reported(engine: Engine, clock: Clock, sender: RecordingSender,
                                                           tmp_path: Path) -> None:
    first = make_system(engine, clock, sender, data_dir=tmp_path)
    org_id = new_org(first)
    stop(first, PHONES[0], "SM0")
    files = ledger_files.attached(engine)
    assert files is not None and files.key_file is not None
    old_key, new_key = files.keyring.signing, ledger_files.add_key(files)
    second = make_system(engine, clock, sender, data_dir=tmp_path)  # a restarted process
    stop(second, PHONES[1], "SM1")
    assert [e["key_id"] for e in entries(engine, org_id)] == [old_key.key_id, new_key.key_id]
    assert problems(second) == []
    lines = files.key_file.read_text().splitlines()
    files.key_file.write_text("\n".join(line for line in lines if not line.startswith(old_key.key_id + ":")))
    third = make_system(engine, clock, sender, data_dir=tmp_path)
    found = problems(third)
    assert len(found) == 1 and f"ledger key {old_key.key_id!r}, which is not in the key file" in found[0]


def test_a_key_file_that_is_not_a_key_file_is_refused_clearly(engine: Engine, clock: Clock, sender: RecordingSender,
                                                              tmp_path: Path) -> None:
    make_system(engine, clock, sender, data_dir=tmp_path)
    files = ledger_files.attached(engine)
    assert files is not None and files.key_file is not None
    files.key_file.write_text("k1:c2hvcnQ=\n")
    with pytest.raises(ledger_files.LedgerFileError, match=r"line 1: the key has 5 bytes"):
        make_system(engine, clock, sender, data_dir=tmp_path)


# ------------------------------------------------------------------------------ the scenarios of the issue


def test_a_deleted_head_row_is_reported(system: System, org: int, clock: Clock) -> None:
    seed(system, clock)
    delete_head(system.engine, org)
    found = problems(system)
    assert found == [f"org {org}: the chain's head row is missing (deleted?)"]


@pytest.mark.parametrize("head", ["deleted", "rolled back"])
def test_the_newest_entry_deleted_with_its_head_is_reported(system: System, org: int, clock: Clock,
                                                            head: str) -> None:
    seed(system, clock)
    write_checkpoints(system.uows, clock())
    delete_entries(system.engine, org, from_seq=3)
    if head == "deleted":
        delete_head(system.engine, org)
    else:
        set_head(system.engine, org, 2)
    found = problems(system)
    assert [p for p in found if "the chain ends at seq 2, but the checkpoint" in p and "ending at seq 3" in p]
    assert len(found) == (2 if head == "deleted" else 1), found


def test_all_entries_deleted_with_the_head_are_reported(system: System, org: int, clock: Clock) -> None:
    seed(system, clock)
    write_checkpoints(system.uows, clock())
    delete_entries(system.engine, org)
    delete_head(system.engine, org)
    found = problems(system)
    assert any("the chain ends at seq 0, but the checkpoint" in p and "3 entries" in p for p in found), found


def test_an_org_deleted_with_its_ledger_is_reported(system: System, org: int, clock: Clock) -> None:
    seed(system, clock)
    write_checkpoints(system.uows, clock())
    with system.engine.begin() as conn:
        for table in (orm.ledger, orm.ledger_heads, orm.messages, orm.consents, orm.addresses, orm.contacts,
                      orm.org_numbers):
            conn.execute(delete(table))
        conn.execute(delete(orm.orgs))
    assert problems(system) == [f"org {org}: has checkpoints but is no longer in the database (deleted?)"]


def test_an_edited_checkpoint_is_reported_and_checkpoints_are_only_written_when_a_chain_moved(
        system: System, org: int, clock: Clock) -> None:
    seed(system, clock)
    assert write_checkpoints(system.uows, clock()).written == 1
    assert write_checkpoints(system.uows, clock()).written == 0  # nothing moved
    files = ledger_files.attached(system.engine)
    assert files is not None and files.checkpoint_file is not None
    text = files.checkpoint_file.read_text()
    files.checkpoint_file.write_text(text.replace('"seq":3', '"seq":2'))
    found = problems(system)
    assert len(found) == 1 and "line 1" in found[0] and "signature does not match" in found[0]


def test_a_chain_cut_back_is_not_signed_by_the_next_checkpoint(system: System, org: int, clock: Clock,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    seed(system, clock)
    write_checkpoints(system.uows, clock())
    delete_entries(system.engine, org, from_seq=2)
    set_head(system.engine, org, 1)
    with caplog.at_level(logging.ERROR, logger="optflow.ledger"):
        run = write_checkpoints(system.uows, clock())
    assert run.written == 0 and run.behind == [org]
    assert "ends at seq 1, before its checkpoint at seq 3" in caplog.text


# ------------------------------------------------------------------------------ never block an opt-out


def damage_counts(engine: Engine) -> dict[str, float]:
    families = {family.name: family for family in DatabaseCollector(lambda: engine).collect()}
    return {sample.labels["kind"]: sample.value for sample in families["optflow_ledger_damage"].samples
            if sample.name.endswith("_total")}


def test_a_stop_after_the_head_row_was_deleted_is_recorded(system: System, org: int, clock: Clock,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    seed(system, clock)
    delete_head(system.engine, org)
    phone = "+14155559999"
    with caplog.at_level(logging.ERROR, logger="optflow.ledger"):
        stop(system, phone, "SM-after-damage")
    with system.bus.uow() as uow:
        assert uow.consents.get(org, phone, Channel.TEXT).state is State.OPTED_OUT
    stored = entries(system.engine, org)
    assert [(e["seq"], e["trigger"], e["method"]) for e in stored[3:]] == [
        (4, chain.DAMAGE_TRIGGER, chain.HEAD_MISSING), (5, "opt_out", "keyword")]
    assert stored[4]["address"] == phone
    assert "ledger damage in org" in caplog.text and "head row was missing" in caplog.text
    assert phone not in caplog.text and phone[-4:] not in caplog.text
    assert damage_counts(system.engine) == {chain.HEAD_MISSING: 1}
    found = problems(system)
    assert len(found) == 1 and "seq 4" in found[0] and "head row was missing" in found[0], found
    stop(system, PHONES[0], "SM-later")  # the head is whole again: no further damage
    assert len(problems(system)) == 1 and damage_counts(system.engine) == {chain.HEAD_MISSING: 1}


def test_a_stop_after_all_entries_and_the_head_were_deleted_is_recorded(system: System, org: int,
                                                                        clock: Clock) -> None:
    seed(system, clock)
    delete_entries(system.engine, org)
    delete_head(system.engine, org)
    stop(system, "+14155559999", "SM-after-damage")
    stored = entries(system.engine, org)
    assert [(e["seq"], e["method"]) for e in stored] == [(1, chain.HEAD_MISSING), (2, "keyword")]
    assert "no entries were present either" in str(stored[0]["evidence"])
    assert len(problems(system)) == 1


@pytest.mark.parametrize("entries_in_transaction", [1, 4])
def test_a_stop_after_the_head_was_rolled_back_is_recorded(system: System, org: int, clock: Clock,
                                                           entries_in_transaction: int) -> None:
    """A head wound back below the entries present makes the new entries' seqs collide; they
    are chained onto the last entry present instead, after the damage entry."""
    seed(system, clock)
    set_head(system.engine, org, 1)
    with SqlUnitOfWork(system.engine) as uow:
        for n in range(entries_in_transaction):
            uow.ledger.append_change(org, None, channel="text", address=PHONES[0], from_state="opted_out",
                                     to_state="opted_out", trigger="opt_out", method=f"batch {n}",
                                     actor_kind="customer", occurred_at=clock(), recorded_at=clock())
        uow.commit()
    stored = entries(system.engine, org)
    assert [e["seq"] for e in stored] == list(range(1, 5 + entries_in_transaction))
    assert stored[3]["method"] == chain.HEAD_BEHIND
    assert [e["method"] for e in stored[4:]] == [f"batch {n}" for n in range(entries_in_transaction)]
    found = problems(system)
    assert len(found) == 1 and "head row said seq 1 but entries up to seq 3 were present" in found[0], found
    assert damage_counts(system.engine) == {chain.HEAD_BEHIND: 1}


def test_a_stop_through_the_group_commit_after_the_head_was_deleted_is_recorded(system: System, org: int,
                                                                                clock: Clock) -> None:
    """The web workers' path: the batcher's shared queue is flushed once for the whole batch."""
    from optflow.entrypoints.inbound_batcher import InboundBatcher

    seed(system, clock)
    delete_head(system.engine, org)

    async def submit() -> InboundBatcher:
        batcher = InboundBatcher(system)
        batcher.start()
        try:
            await batcher.submit(c.ReceiveInbound(Channel.TEXT, "+14155559999", ORG_NUMBER, "STOP", "SM-batch"))
        finally:
            await batcher.close()
        return batcher

    assert asyncio.run(submit()).batches == 1  # written by the group commit, not a fallback
    with system.bus.uow() as uow:
        assert uow.consents.get(org, "+14155559999", Channel.TEXT).state is State.OPTED_OUT
    assert [e["method"] for e in entries(system.engine, org)[3:]] == [chain.HEAD_MISSING, "keyword"]


def test_transactions_finding_the_head_missing_at_once_both_write(system: System, org: int, clock: Clock) -> None:
    """PostgreSQL: two transactions re-creating the missing head queue on it; the second chains
    after the first, and the damage is recorded once."""
    seed(system, clock)
    delete_head(system.engine, org)
    with system.engine.connect() as first, system.engine.connect() as second:
        first_tx = first.begin()
        first_ledger = LedgerRepository(first)
        first_ledger.append_change(org, None, channel="text", address=PHONES[0], from_state="opted_out",
                                   to_state="opted_out", trigger="opt_out", method="first", actor_kind="customer",
                                   occurred_at=clock(), recorded_at=clock())
        first_ledger.flush()
        if system.engine.dialect.name == "postgresql":
            import threading

            done = threading.Event()

            def write_second() -> None:
                with second.begin():
                    ledger = LedgerRepository(second)
                    ledger.append_change(org, None, channel="text", address=PHONES[1], from_state="opted_out",
                                         to_state="opted_out", trigger="opt_out", method="second",
                                         actor_kind="customer", occurred_at=clock(), recorded_at=clock())
                    ledger.flush()
                done.set()

            thread = threading.Thread(target=write_second)
            thread.start()
            assert not done.wait(0.5)  # waits for the first transaction's new head row
            first_tx.commit()
            thread.join(timeout=30)
            assert done.is_set()
        else:
            first_tx.commit()
            with second.begin():
                ledger = LedgerRepository(second)
                ledger.append_change(org, None, channel="text", address=PHONES[1], from_state="opted_out",
                                     to_state="opted_out", trigger="opt_out", method="second",
                                     actor_kind="customer", occurred_at=clock(), recorded_at=clock())
                ledger.flush()
    assert [e["method"] for e in entries(system.engine, org)[3:]] == [chain.HEAD_MISSING, "first", "second"]
    with system.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(orm.ledger_heads)).scalar() == 1


def test_the_damage_entry_is_keyed_like_any_other(system: System, org: int, clock: Clock) -> None:
    """Someone who forges or edits a damage entry meets the key like anywhere else."""
    seed(system, clock)
    delete_head(system.engine, org)
    stop(system, "+14155559999", "SM-x")
    with system.engine.begin() as conn:
        conn.execute(update(orm.ledger).where(orm.ledger.c.trigger == chain.DAMAGE_TRIGGER)
                     .values(evidence="nothing happened"))
    assert any("content was edited" in p for p in problems(system))
