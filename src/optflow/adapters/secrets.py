"""Keys kept outside the database, so that a copy of the database alone reveals nothing they protect.

A key comes from the environment (its value), or from a file named in the configuration, or from
a file beside the SQLite database. A missing file is created once, atomically and readable only by
its owner (0600): two processes starting together end up with the same key. Every process and
node of an installation must see the same file (or the same value); back it up with the database,
but store it apart from database dumps.

Used for the PIN key (`OPTFLOW_PIN_KEY`, `OPTFLOW_PIN_KEY_FILE`); other keys (the ledger's) can
use the same functions with their own names.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import URL
from sqlalchemy.engine import make_url

log = logging.getLogger("optflow.secrets")

KEY_BYTES = 32
MIN_CONFIGURED_CHARS = 32


class SecretError(RuntimeError):
    """A configured key that cannot be used, or no place to keep one; the message says which."""


@dataclass(frozen=True)
class SecretSource:
    """Where one key comes from. `value`: the key itself (from the environment); `path`: its file."""

    name: str
    value: str | None = None
    path: Path | None = None


def secret_file_beside_database(database_url: str | URL, suffix: str) -> Path | None:
    """`<database file>-<suffix>` for a SQLite file; None for PostgreSQL and in-memory SQLite,
    which have no directory of their own to share."""
    url = make_url(database_url)
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    return Path(os.path.abspath(url.database + "-" + suffix))


def load_key(source: SecretSource, *, ephemeral_ok: bool = False) -> bytes:
    """The key of `source`: its configured value, else the content of its file (created when
    missing). `ephemeral_ok`: with neither, a random key for this process alone (an in-memory
    database lives no longer than the process)."""
    if source.value is not None:
        if len(source.value) < MIN_CONFIGURED_CHARS:
            raise SecretError(f"the {source.name} must be at least {MIN_CONFIGURED_CHARS} characters long "
                              "(e.g. the output of `python -c 'import secrets; print(secrets.token_hex(32))'`)")
        return source.value.encode()
    if source.path is not None:
        return read_or_create_key_file(source.path, source.name)
    if ephemeral_ok:
        return secrets.token_bytes(KEY_BYTES)
    raise SecretError(f"no {source.name} is configured and the database has no directory to keep one beside it")


def read_or_create_key_file(path: Path, name: str = "key") -> bytes:
    """The key in `path` (hex text), written first if the file does not exist yet."""
    try:
        return _read(path, name)
    except FileNotFoundError:
        pass
    _create(path, name)
    return _read(path, name)


def _read(path: Path, name: str) -> bytes:
    text = path.read_text(encoding="ascii", errors="replace").strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise SecretError(f"the {name} file {path} does not hold a hex key") from None
    if len(key) < KEY_BYTES // 2:
        raise SecretError(f"the {name} file {path} holds a key of {len(key)} bytes; it needs at least "
                          f"{KEY_BYTES // 2}")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the %s file %s can be read by other users (mode %o); chmod 600 it", name, path, mode)
    return key


def create_private_file(path: Path, text: str) -> bool:
    """Create `path` (mode 0600) holding `text`, atomically: written to a private file aside, then
    linked into place, so a process starting at the same moment reads either no file or the whole
    of one, and there is never a second key. False if another process created it first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    aside = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    descriptor = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        try:
            os.link(aside, path)
        except FileExistsError:
            return False
    finally:
        aside.unlink(missing_ok=True)
    return True


def _create(path: Path, name: str) -> None:
    try:
        if not create_private_file(path, secrets.token_hex(KEY_BYTES) + "\n"):
            return
    except OSError as exc:
        raise SecretError(f"cannot create the {name} file {path}: {exc.strerror or exc}") from None
    log.warning("created a new %s in %s (mode 0600): keep it with the database's backups, apart from "
                "database dumps; every node of this installation needs the same file", name, path)
