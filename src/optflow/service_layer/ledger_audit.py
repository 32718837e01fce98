"""Checkpoints of the ledger's chains, kept outside the database, and verifying the ledger
against its keys, its head rows and those checkpoints (`optflow ledger checkpoint|verify`, and
the scheduler's periodic checkpoint)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from ..domain.ledger import ChainReport, Checkpoint
from ..domain.model import DomainError
from .ports import LedgerFiles
from .unit_of_work import UnitOfWorkFactory

log = logging.getLogger("optflow.ledger")


def _files(uows: UnitOfWorkFactory) -> LedgerFiles:
    files = uows.ledger_files()
    if files is None:
        raise DomainError("this engine has no ledger keys (it was not bootstrapped)", code="ledger_key_file")
    return files


@dataclass
class CheckpointRun:
    written: int = 0
    path: Path | None = None
    behind: list[int] = field(default_factory=list)  # orgs whose chain ends before their last checkpoint


def write_checkpoints(uows: UnitOfWorkFactory, now: datetime) -> CheckpointRun:
    """Sign and append a checkpoint of every org's chain that moved since its last checkpoint.
    A chain that ends before its last checkpoint is not signed (that would bless the cut): it is
    logged at ERROR for `optflow ledger verify` to explain."""
    files = _files(uows)
    run = CheckpointRun(path=files.checkpoint_file)
    if files.checkpoint_file is None:
        return run
    latest: dict[int, Checkpoint] = {}
    for _, checkpoint in files.read_checkpoints():
        if isinstance(checkpoint, Checkpoint) and checkpoint.problem(files.keyring) is None:
            latest[checkpoint.org_id] = checkpoint
    with uows(read_only=True) as uow:
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
    files.append_checkpoints(signed)  # after the transaction: no file IO inside it
    run.written = len(signed)
    return run


def export_checkpoints(uows: UnitOfWorkFactory) -> list[str]:
    """The checkpoint file's lines, to keep a copy elsewhere (each line is signed)."""
    files = _files(uows)
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


def verify_ledger(uows: UnitOfWorkFactory, org_id: int | None = None) -> LedgerVerification:
    """Verify one org's chain, or every org's, with the installation's keys and checkpoints."""
    files = _files(uows)
    lines = files.read_checkpoints()
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
    with uows(read_only=True) as uow:
        known = [row.id for row in uow.orgs.all()]
        if org_id is not None:
            uow.orgs.get(org_id)  # NotFound names the org
        org_ids = [org_id] if org_id is not None else known
        reports = [uow.ledger.verify(org, by_org.get(org, [])) for org in org_ids]
    if org_id is None:
        for vanished in sorted(set(by_org) - set(known)):
            file_problems.append(f"org {vanished}: has checkpoints but is no longer in the database (deleted?)")
    return LedgerVerification(reports, file_problems, files)
