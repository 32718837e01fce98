"""The hash chain of the consent ledger: what an entry's hash covers, and how to check a chain.

Each org has its own chain: entry `seq` n stores the hash of entry n-1 (`prev_hash`) and its own
`hash`, an HMAC-SHA256 under a ledger key (`key_id` names it) of the previous hash and the
entry's canonical fields. The key is kept outside the database, so someone who can write the
database can still edit an entry but cannot compute the hashes that would hide the edit.
Deleting or reordering entries breaks `seq` contiguity or the `prev_hash` link. Deleting the
newest entries (and winding the head row back to match) is caught by signed checkpoints of each
chain's end, kept outside the database too (`Checkpoint`).

Entries written before ledger keys existed carry no `key_id` and a plain SHA-256 (`unkeyed`):
they still verify, and are counted apart, since anyone can recompute them.

Everything here is pure: keys, entries and checkpoints come in, problems go out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

GENESIS = "0" * 64

# The trigger of the entry the ledger writes about itself when, at commit time, it finds its
# chain damaged (the head row missing or behind the entries): the opt-out being written is kept,
# and the damage stays visible in the chain. Its `method` names the damage.
DAMAGE_TRIGGER = "ledger_damage"
HEAD_MISSING = "head_missing"
HEAD_BEHIND = "head_behind"

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


@dataclass(frozen=True)
class LedgerKey:
    key_id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True)
class Keyring:
    """The ledger keys an installation knows, oldest first: the newest signs, all verify."""

    keys: tuple[LedgerKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise ValueError("a keyring needs at least one key")

    @property
    def signing(self) -> LedgerKey:
        return self.keys[-1]

    def get(self, key_id: str) -> LedgerKey | None:
        for key in self.keys:
            if key.key_id == key_id:
                return key
        return None


def _canonical(value: object) -> object:
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=UTC)
        return aware.astimezone(UTC).isoformat(timespec="microseconds")
    return value


def _content(items: Sequence[object]) -> bytes:
    return json.dumps(list(items), ensure_ascii=False, separators=(",", ":"), default=str).encode()


def entry_hash(prev_hash: str, fields: Mapping[str, object], key: LedgerKey | None = None) -> str:
    """The entry's hash: keyed (HMAC-SHA256, the key id inside the content) when `key` is given,
    else the unkeyed SHA-256 of entries written before ledger keys existed."""
    canonical = [_canonical(fields.get(name)) for name in HASHED_FIELDS]
    if key is None:
        return hashlib.sha256(_content([prev_hash, *canonical])).hexdigest()
    return hmac.new(key.secret, _content([prev_hash, key.key_id, *canonical]), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that org `org_id`'s chain held `count` entries and ended at `seq` with
    `head_hash` at time `at`. Kept outside the database: a chain that later ends before `seq`,
    or holds another entry there, has been cut back or rewritten."""

    org_id: int
    seq: int
    head_hash: str
    count: int
    at: datetime
    key_id: str
    mac: str

    @staticmethod
    def _signed_content(org_id: int, seq: int, head_hash: str, count: int, at: datetime, key_id: str) -> bytes:
        return _content(["optflow-ledger-checkpoint-1", org_id, seq, head_hash, count, _canonical(at), key_id])

    @classmethod
    def sign(cls, key: LedgerKey, org_id: int, seq: int, head_hash: str, count: int, at: datetime) -> Checkpoint:
        content = cls._signed_content(org_id, seq, head_hash, count, at, key.key_id)
        mac = hmac.new(key.secret, content, hashlib.sha256).hexdigest()
        return cls(org_id, seq, head_hash, count, at, key.key_id, mac)

    def problem(self, keyring: Keyring) -> str | None:
        """Why this checkpoint cannot be trusted, or None if its signature holds."""
        key = keyring.get(self.key_id)
        if key is None:
            return f"signed with ledger key {self.key_id!r}, which is not in the key file"
        content = self._signed_content(self.org_id, self.seq, self.head_hash, self.count, self.at, self.key_id)
        expected = hmac.new(key.secret, content, hashlib.sha256).hexdigest()
        return None if hmac.compare_digest(expected, self.mac) else "its signature does not match (edited?)"

    def to_json(self) -> str:
        return json.dumps({"org_id": self.org_id, "seq": self.seq, "head_hash": self.head_hash,
                           "count": self.count, "at": _canonical(self.at), "key_id": self.key_id,
                           "mac": self.mac}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        """Raises ValueError naming what is wrong with the line."""
        try:
            data = json.loads(text)
            return cls(int(data["org_id"]), int(data["seq"]), str(data["head_hash"]), int(data["count"]),
                       datetime.fromisoformat(data["at"]), str(data["key_id"]), str(data["mac"]))
        except (ValueError, TypeError, KeyError) as exc:
            raise ValueError(f"not a checkpoint ({exc.__class__.__name__}: {exc})") from None


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


@dataclass
class ChainReport:
    """What verifying one org's chain found. `problems` empty: intact. `unkeyed` entries are
    intact but carry only the plain hash of entries older than ledger keys."""

    org_id: int
    entries: int = 0
    unkeyed: int = 0
    checkpoints: int = 0
    problems: list[ChainProblem] = field(default_factory=list)


def verify_chain(
    org_id: int,
    entries: Iterable[Mapping[str, Any]],
    head_seq: int | None,
    head_hash: str | None,
    keyring: Keyring | None = None,
    checkpoints: Sequence[Checkpoint] = (),
) -> ChainReport:
    """Check one org's entries, ordered by seq, against its head row (None: the row is missing)
    and its checkpoints (whose signatures the caller has checked)."""
    report = ChainReport(org_id, checkpoints=len(checkpoints))
    problems = report.problems

    def problem(seq: int | None, entry_id: int | None, text: str) -> None:
        problems.append(ChainProblem(org_id, seq, entry_id, text))

    expected_seq = 1
    prev_hash = GENESIS
    last_seq, last_hash = 0, GENESIS
    keyed_seen = False
    checkpointed = {checkpoint.seq for checkpoint in checkpoints}
    hash_at: dict[int, str] = {}  # only at checkpointed seqs: a chain may hold millions of entries
    for entry in entries:
        report.entries += 1
        seq = int(entry["seq"])
        entry_id = entry.get("id")
        if seq != expected_seq:
            if seq > expected_seq:
                missing = f"{expected_seq}" if seq == expected_seq + 1 else f"{expected_seq}-{seq - 1}"
                problem(seq, entry_id, f"entries {missing} are missing (deleted?)")
            else:
                problem(seq, entry_id, "out of order or duplicated")
        if entry["prev_hash"] != prev_hash:
            problem(seq, entry_id, "does not link to the entry before it")
        key_id = entry.get("key_id")
        if key_id is None:
            report.unkeyed += 1
            if keyed_seen:
                problem(seq, entry_id, "has no ledger key although entries before it have one: "
                                       "rewritten with the unkeyed hash (tampered)")
            elif entry_hash(str(entry["prev_hash"]), entry) != entry["hash"]:
                problem(seq, entry_id, "content was edited after it was recorded")
        else:
            keyed_seen = True
            key = keyring.get(str(key_id)) if keyring is not None else None
            if key is None:
                problem(seq, entry_id, f"signed with ledger key {key_id!r}, which is not in the key file "
                                       "(restore the key file from its backup)")
            elif not hmac.compare_digest(entry_hash(str(entry["prev_hash"]), entry, key), str(entry["hash"])):
                problem(seq, entry_id, "content was edited after it was recorded, or its hash recomputed "
                                       "without the ledger key")
        if entry["trigger"] == DAMAGE_TRIGGER:
            problem(seq, entry_id, f"the ledger found itself damaged when writing here: {entry['evidence']}")
        prev_hash = str(entry["hash"])
        if seq in checkpointed:
            hash_at[seq] = prev_hash
        expected_seq = seq + 1
        last_seq, last_hash = seq, prev_hash
    if head_seq is None:
        problem(None, None, "the chain's head row is missing (deleted?)")
    elif head_seq != last_seq or (head_hash or GENESIS) != last_hash:
        if head_seq > last_seq:
            problem(None, None, f"the newest entries up to seq {head_seq} are missing (deleted?)")
        else:
            problem(None, None, f"the chain's head row says seq {head_seq} but the chain ends at seq {last_seq} "
                                "(head rolled back?)")
    for checkpoint in checkpoints:
        when = f"the checkpoint of {_canonical(checkpoint.at)}"
        if checkpoint.seq > last_seq:
            problem(None, None, f"the chain ends at seq {last_seq}, but {when} recorded it ending at seq "
                                f"{checkpoint.seq} with {checkpoint.count} entries: newest entries deleted "
                                "and the head rolled back, or the whole chain deleted")
        elif checkpoint.seq > 0 and hash_at.get(checkpoint.seq) != checkpoint.head_hash:
            problem(checkpoint.seq, None, f"differs from {when}: the chain up to here was rewritten or deleted")
    return report
