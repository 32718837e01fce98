"""Keys outside the database (`adapters.secrets`) and the PIN key that bootstrap takes from them:
a file created once, 0600, beside the SQLite database, shared by every process, never in the
database; a configured key wins; unusable keys are refused with a message naming the problem."""

from __future__ import annotations

import hashlib
import stat
import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

from conftest import START, Clock, RecordingSender, new_agent, new_org
from optflow.adapters import orm
from optflow.adapters.secrets import SecretError, SecretSource, load_key, read_or_create_key_file
from optflow.bootstrap import bootstrap
from optflow.config import Config
from optflow.domain import commands as c
from optflow.domain import pin as pins
from optflow.domain.model import Actor, ActorKind, Channel, State

CUSTOMER = "+14155550144"
ORG_NUMBER = "+12025550155"


def test_a_key_file_is_created_once_private_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pin.key"
    first = read_or_create_key_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(first) == 32
    assert read_or_create_key_file(path) == first
    assert [p.name for p in path.parent.iterdir()] == ["pin.key"]  # no temporary file left behind


def test_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "pin.key"
    keys: list[bytes] = []
    start = threading.Barrier(8)

    def create() -> None:
        start.wait()
        keys.append(read_or_create_key_file(path))

    threads = [threading.Thread(target=create) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(keys) == 8 and len(set(keys)) == 1


@pytest.mark.parametrize("content, problem", [("not hex\n", "does not hold a hex key"), ("abcd\n", "at least")])
def test_an_unusable_key_file_is_refused_naming_it(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "pin.key"
    path.write_text(content)
    with pytest.raises(SecretError, match=problem) as refused:
        load_key(SecretSource("PIN key", path=path))
    assert str(path) in str(refused.value)


def test_a_configured_key_must_be_long_enough() -> None:
    with pytest.raises(SecretError, match="at least 32 characters"):
        load_key(SecretSource("PIN key", value="short"))
    assert load_key(SecretSource("PIN key", value="x" * 32)) == b"x" * 32


def test_pins_are_hashed_under_a_key_file_beside_the_database_and_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optflow.db'}"
    clock = Clock(START)
    first = bootstrap(Config(database_url=url, secret="s"), clock=clock, sender=RecordingSender(),
                      pin_digits=lambda: "123456")
    key_file = tmp_path / "optflow.db-pin.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    org = new_org(first, "Pinned", ORG_NUMBER, pin_required=True)
    agent = Actor(ActorKind.AGENT, str(new_agent(first, org).id))
    contact = first.bus.handle(c.CreateContact(org, phones=(CUSTOMER,))).contact_id
    first.bus.handle(c.RequestOptIn(org, contact, Channel.TEXT, agent))
    first.bus.handle(c.ReceiveInbound(Channel.TEXT, CUSTOMER, ORG_NUMBER, "YES", "SMpin"))
    with first.engine.connect() as conn:
        stored = conn.execute(select(orm.consents.c.pin_hash).where(orm.consents.c.address == CUSTOMER)).scalar()
        everything = "\n".join(str(row) for table in orm.metadata.sorted_tables
                               for row in conn.execute(text(f"SELECT * FROM {table.name}")))
    first.close()
    # What a leaked database gives: the old unkeyed hash of the right code would match it at once.
    consent_key = f"{org}:{CUSTOMER}:text"
    assert stored != hashlib.sha256(f"{consent_key}:123456".encode()).hexdigest()
    assert stored == pins.pin_hash(bytes.fromhex(key_file.read_text()), consent_key, "123456")
    assert key_file.read_text().strip() not in everything
    again = bootstrap(Config(database_url=url, secret="s"), clock=clock, sender=RecordingSender())
    result = again.bus.handle(c.ConfirmPin(org, contact, Channel.TEXT, agent, pin="123456"))
    assert result.state is State.OPTED_IN
    again.close()


def test_a_configured_pin_key_wins_over_the_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optflow.db'}"
    system = bootstrap(Config(database_url=url, pin_key="p" * 32))
    assert system.services.pin_key == b"p" * 32 and not (tmp_path / "optflow.db-pin.key").exists()
    system.close()
    named = tmp_path / "elsewhere" / "pin.key"
    system = bootstrap(Config(database_url=url, pin_key_file=named))
    assert system.services.pin_key == bytes.fromhex(named.read_text())
    system.close()
