"""The two files of the consent ledger that live outside the database.

- The key file: one ledger key a line, `key_id:base64key`, oldest first; the newest signs new
  entries and checkpoints, all of them verify. A key kept in the database would be no secret
  from someone who can rewrite the database, so it never goes there. Lost, the ledger can no
  longer be verified: back it up.
- The checkpoint file: one signed `Checkpoint` a line (JSON), appended by `optflow ledger
  checkpoint` and by the scheduler. It remembers how far each chain reached, so a chain cut
  back later (newest entries and head row deleted or wound back) shows.

With no configuration both sit beside the SQLite database file (`<db>-ledger.keys`,
`<db>-ledger-checkpoints.jsonl`), or for PostgreSQL in the data directory
(`OPTFLOW_DATA_DIR`, default `$XDG_DATA_HOME/optflow` or `~/.local/share/optflow`). An
in-memory database gets an in-memory key and no checkpoint file: it lives no longer than them.
"""

from __future__ import annotations

import base64
import binascii
import logging
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine

from ..config import Config
from ..domain.ledger import Checkpoint, Keyring, LedgerKey
from ..domain.model import DomainError
from . import db
from .secrets import create_private_file

log = logging.getLogger("optflow.ledger")

EXECUTION_OPTION = "optflow_ledger_files"  # how an engine carries its `LedgerFiles` to every connection
KEY_ID = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
KEY_BYTES = 32


class LedgerFileError(DomainError):
    code = "ledger_key_file"


@dataclass(frozen=True)
class LedgerFiles:
    keyring: Keyring
    key_file: Path | None  # None: an in-memory database's key, kept in memory
    checkpoint_file: Path | None
    created: bool = False  # this process generated the key file

    def read_checkpoints(self) -> list[tuple[int, Checkpoint | str]]:
        """Every line of the checkpoint file by number: its checkpoint, or what is wrong with it."""
        return CheckpointFile(self.checkpoint_file).read() if self.checkpoint_file is not None else []

    def append_checkpoints(self, checkpoints: list[Checkpoint]) -> None:
        if self.checkpoint_file is not None:
            CheckpointFile(self.checkpoint_file).append(checkpoints)


def new_key() -> LedgerKey:
    return LedgerKey(secrets.token_hex(4), secrets.token_bytes(KEY_BYTES))


def _key_line(key: LedgerKey) -> str:
    return f"{key.key_id}:{base64.b64encode(key.secret).decode()}\n"


def parse_keys(text: str, source: str) -> Keyring:
    """Raises LedgerFileError naming the file and line of anything wrong."""
    keys: list[LedgerKey] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key_id, colon, encoded = line.partition(":")
        where = f"{source}, line {number}"
        if not colon or not KEY_ID.match(key_id):
            raise LedgerFileError(f"{where}: expected key_id:base64key (key id of letters, digits, '.', '_', '-')")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise LedgerFileError(f"{where}: the key is not valid base64") from None
        if len(secret) < KEY_BYTES:
            raise LedgerFileError(f"{where}: the key has {len(secret)} bytes; at least {KEY_BYTES} are needed")
        if any(key.key_id == key_id for key in keys):
            raise LedgerFileError(f"{where}: key id {key_id!r} appears twice")
        keys.append(LedgerKey(key_id, secret))
    if not keys:
        raise LedgerFileError(f"{source} holds no ledger key")
    return Keyring(tuple(keys))


def data_dir(config: Config) -> Path:
    if config.data_dir is not None:
        return config.data_dir
    xdg = os.environ.get("XDG_DATA_HOME")
    return (Path(xdg) if xdg else Path.home() / ".local" / "share") / "optflow"


def default_paths(config: Config, engine: Engine) -> tuple[Path, Path] | None:
    """(key file, checkpoint file) for this database; None for an in-memory database."""
    database_file = db.sqlite_file(engine)
    if database_file is not None:
        base = config.data_dir or Path(database_file).parent
        name = Path(database_file).name
        default_key = base / f"{name}-ledger.keys"
    elif db.is_sqlite(engine):
        return None
    else:
        base = data_dir(config)
        url = engine.url
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{url.host or 'local'}-{url.port or 5432}-{url.database}")
        default_key = base / "ledger.keys"
    key_file = config.ledger_key_file or default_key
    return key_file, config.ledger_checkpoint_file or key_file.parent / f"{name}-ledger-checkpoints.jsonl"


def load_or_create(config: Config, engine: Engine) -> LedgerFiles:
    """The ledger's keys and checkpoint file for this database. A missing key file at the default
    place is generated (mode 0600); one named in the configuration must exist."""
    paths = default_paths(config, engine)
    if paths is None and config.ledger_key_file is None:
        return LedgerFiles(Keyring((new_key(),)), None, None)
    key_file, checkpoint_file = paths if paths is not None else (config.ledger_key_file, None)
    assert key_file is not None
    created = False
    if not key_file.exists():
        if config.ledger_key_file is not None:
            raise LedgerFileError(f"the ledger key file {key_file} (OPTFLOW_LEDGER_KEY_FILE) does not exist")
        created = _create_key_file(key_file)
    try:
        text = key_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LedgerFileError(f"cannot read the ledger key file {key_file}: {exc}") from None
    if stat.S_IMODE(key_file.stat().st_mode) & 0o077:
        log.warning("the ledger key file %s can be read by other users: chmod 600 it", key_file)
    return LedgerFiles(parse_keys(text, str(key_file)), key_file, checkpoint_file, created)


def _create_key_file(path: Path) -> bool:
    """Write a new key file (0600, atomically: `secrets.create_private_file`). False if another
    process created it first."""
    created = create_private_file(path, (
        "# optflow ledger keys: key_id:base64key, oldest first; the last one signs.\n"
        "# Keep this file secret and backed up: without it the ledger cannot be verified.\n" + _key_line(new_key())))
    if not created:
        return False
    log.warning("generated a new ledger key in %s: back this file up (and keep it secret); without it the "
                "ledger cannot be verified", path)
    return True


def add_key(files: LedgerFiles) -> LedgerKey:
    """Append a new key to the key file: it signs from the next start of each process on; the
    older keys stay to verify what they signed."""
    if files.key_file is None:
        raise LedgerFileError("an in-memory database has no key file")
    key = new_key()
    descriptor = os.open(files.key_file, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(descriptor, _key_line(key).encode())
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return key


class CheckpointFile:
    """Append-only JSON lines of signed checkpoints."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(self, checkpoints: list[Checkpoint]) -> None:
        if not checkpoints:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = "".join(checkpoint.to_json() + "\n" for checkpoint in checkpoints).encode()
        descriptor = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(descriptor, data)  # one write: lines of processes appending together do not interleave
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def read(self) -> list[tuple[int, Checkpoint | str]]:
        """Every line by number: its checkpoint, or what is wrong with it."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return []
        lines: list[tuple[int, Checkpoint | str]] = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                lines.append((number, Checkpoint.from_json(line)))
            except ValueError as exc:
                lines.append((number, str(exc)))
        return lines


def attach(engine: Engine, files: LedgerFiles) -> None:
    """Give every connection of `engine` the ledger's keys (read back by `attached`)."""
    engine.update_execution_options(**{EXECUTION_OPTION: files})


def attached(conn: Connection | Engine) -> LedgerFiles | None:
    """The ledger files of the engine the connection came from; None for an engine that was
    not bootstrapped (its entries are written unkeyed, and verify counts them as such)."""
    files: Any = conn.get_execution_options().get(EXECUTION_OPTION)
    return files if isinstance(files, LedgerFiles) else None
