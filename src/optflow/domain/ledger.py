"""The hash chain of the consent ledger: what an entry's hash covers, and how to check a chain.

Each org has its own chain: entry `seq` n stores the hash of entry n-1 (`prev_hash`) and its own
`hash = sha256(prev_hash | canonical fields)`. Editing a field changes the hash; deleting or
reordering entries breaks `seq` contiguity or the `prev_hash` link; deleting the newest entries is
caught by comparing with the chain's head, which is stored apart and updated in the same
transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64

HASHED_FIELDS: tuple[str, ...] = (
    "org_id",
    "seq",
    "contact_id",
    "channel",
    "address",
    "from_state",
    "to_state",
    "trigger",
    "method",
    "actor_kind",
    "actor_id",
    "source_message_id",
    "evidence",
    "occurred_at",
    "recorded_at",
)


def _canonical(value: object) -> object:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def entry_hash(prev_hash: str, fields: Mapping[str, object]) -> str:
    content = json.dumps(
        [prev_hash, *(_canonical(fields.get(name)) for name in HASHED_FIELDS)],
        ensure_ascii=False,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(content.encode()).hexdigest()


@dataclass(frozen=True)
class ChainProblem:
    org_id: int
    seq: int | None
    entry_id: int | None
    problem: str

    def __str__(self) -> str:
        where = f"org {self.org_id}"
        if self.seq is not None:
            where += f", entry seq {self.seq}"
        if self.entry_id is not None:
            where += f" (id {self.entry_id})"
        return f"{where}: {self.problem}"


def verify_chain(
    org_id: int,
    entries: Iterable[Mapping[str, Any]],
    head_seq: int | None,
    head_hash: str | None,
) -> list[ChainProblem]:
    """Check one org's entries, ordered by seq. Returns every problem found (empty: intact)."""
    problems: list[ChainProblem] = []
    expected_seq = 1
    prev_hash = GENESIS
    last_seq, last_hash = 0, GENESIS
    for entry in entries:
        seq = int(entry["seq"])
        entry_id = entry.get("id")
        if seq != expected_seq:
            if seq > expected_seq:
                missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}-{seq - 1}"
                problems.append(ChainProblem(org_id, seq, entry_id, f"entries {missing} are missing (deleted?)"))
            else:
                problems.append(ChainProblem(org_id, seq, entry_id, "out of order or duplicated"))
        if entry["prev_hash"] != prev_hash:
            problems.append(ChainProblem(org_id, seq, entry_id, "does not link to the entry before it"))
        recomputed = entry_hash(str(entry["prev_hash"]), entry)
        if recomputed != entry["hash"]:
            problems.append(ChainProblem(org_id, seq, entry_id, "content was edited after it was recorded"))
        prev_hash = str(entry["hash"])
        expected_seq = seq + 1
        last_seq, last_hash = seq, prev_hash
    if head_seq is not None and (head_seq != last_seq or (head_hash or GENESIS) != last_hash):
        if head_seq > last_seq:
            problems.append(
                ChainProblem(org_id, None, None, f"the newest entries up to seq {head_seq} are missing (deleted?)")
            )
        else:
            problems.append(ChainProblem(org_id, None, None, "the chain does not end where its head says"))
    return problems
