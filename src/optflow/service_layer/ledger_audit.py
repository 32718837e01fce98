"""Checkpoints of the ledger's chains, kept outside the database, and verifying the ledger
against its keys, its head rows and those checkpoints (`optflow ledger checkpoint|verify`, and
the scheduler's periodic checkpoint)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import Engine

from ..adapters import ledger_files
from ..adapters.ledger_files import CheckpointFile, LedgerFiles
from ..domain.ledger import ChainReport, Checkpoint
from ..domain.model import DomainError
from .unit_of_work import UnitOfWork

log = logging.getLogger("optflow.ledger")


def _files(engine: Engine) -> LedgerFiles:
    files = ledger_files.attached(engine)
    if files is None:
        raise DomainError("this engine has no ledger keys (it was not bootstrapped)", code="ledger_key_file")
    return files


@dataclass
class CheckpointRun:
    written: int = 0
    path: Path | None = None
    behind: list[int] = field(default_factory=list)  # orgs whose chain ends before their last checkpoint


def write_checkpoints(engine: Engine, now: datetime) -> CheckpointRun:
    """Sign and append a checkpoint of every org's chain that moved since its last checkpoint.
    A chain that ends before its last checkpoint is not signed (that would bless the cut): it is
    logged at ERROR for `optflow ledger verify` to explain."""
    files = _files(engine)
    run = CheckpointRun(path=files.checkpoint_file)
    if files.checkpoint_file is None:
        return run
    store = CheckpointFile(files.checkpoint_file)
    latest: dict[int, Checkpoint] = {}
    for _, checkpoint in store.read():
        if isinstance(checkpoint, Checkpoint) and checkpoint.problem(files.keyring) is None:
            latest[checkpoint.org_id] = checkpoint
    with UnitOfWork(engine, read_only=True) as uow:
        ends = {row.id: uow.ledger.chain_end(row.id) for row in uow.orgs.all()}
    signed = []
    for org_id, (seq, head_hash, count) in ends.items():
        previous = latest.get(org_id)
        if previous is not None and seq < previous.seq:
            run.behind.append(org_id)
            log.error("ledger damage in org %s: the chain ends at seq %s, before its checkpoint at seq %s "
                      "(run `optflow ledger verify`)", org_id, seq, previous.seq)
        elif (seq > 0 and previous is None) or (previous is not None and (seq, head_hash) != (previous.seq,
                                                                                            previous.head_hash)):
            signed.append(Checkpoint.sign(files.keyring.signing, org_id, seq, head_hash, count, now))
    store.append(signed)  # after the transaction: no file IO inside it
    run.written = len(signed)
    return run


def export_checkpoints(engine: Engine) -> list[str]:
    """The checkpoint file's lines, to keep a copy elsewhere (each line is signed)."""
    files = _files(engine)
    if files.checkpoint_file is None or not files.checkpoint_file.exists():
        return []
    return files.checkpoint_file.read_text(encoding="utf-8", errors="replace").splitlines()


@dataclass
class LedgerVerification:
    reports: list[ChainReport]
    file_problems: list[str]  # checkpoint lines that cannot be trusted; checkpoints of vanished orgs
    files: LedgerFiles

    @property
    def problems(self) -> list[str]:
        return [str(p) for report in self.reports for p in report.problems] + self.file_problems


def verify_ledger(engine: Engine, org_id: int | None = None) -> LedgerVerification:
    """Verify one org's chain, or every org's, with the installation's keys and checkpoints."""
    files = _files(engine)
    lines = CheckpointFile(files.checkpoint_file).read() if files.checkpoint_file is not None else []
    by_org: dict[int, list[Checkpoint]] = {}
    file_problems = []
    for number, checkpoint in lines:
        if isinstance(checkpoint, str):
            file_problems.append(f"checkpoint file {files.checkpoint_file}, line {number}: {checkpoint}")
            continue
        why = checkpoint.problem(files.keyring)
        if why is not None:
            file_problems.append(f"checkpoint file {files.checkpoint_file}, line {number} (org {checkpoint.org_id}): "
                                 f"{why}")
            continue
        by_org.setdefault(checkpoint.org_id, []).append(checkpoint)
    with UnitOfWork(engine, read_only=True) as uow:
        known = [row.id for row in uow.orgs.all()]
        if org_id is not None:
            uow.orgs.get(org_id)  # NotFound names the org
        org_ids = [org_id] if org_id is not None else known
        reports = [uow.ledger.verify(org, by_org.get(org, [])) for org in org_ids]
    if org_id is None:
        for vanished in sorted(set(by_org) - set(known)):
            file_problems.append(f"org {vanished}: has checkpoints but is no longer in the database (deleted?)")
    return LedgerVerification(reports, file_problems, files)
