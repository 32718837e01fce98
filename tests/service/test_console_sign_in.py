"""Console sign-in: passwords, sessions that end, and failed sign-ins slowed then locked (on both
databases, with the fixed clock: no test waits)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, select

from conftest import Clock, RecordingSender, make_system, new_agent, new_org
from optflow.adapters import orm
from optflow.bootstrap import System
from optflow.domain.model import InvalidInput, TransitionRefused
from optflow.service_layer import console_auth

PASSWORD = "correct horse battery"
EMAIL = "dana@example.com"
IP = "203.0.113.7"


@pytest.fixture
def people(engine: Engine, clock: Clock, sender: RecordingSender) -> Iterator[tuple[System, int, int]]:
    """A system on SQLite and PostgreSQL, an org, and an agent with a console sign-in."""
    system = make_system(engine, clock, sender)
    org_id = new_org(system)
    agent_id = new_agent(system, org_id).id
    with system.bus.uow() as uow:
        console_auth.set_sign_in(uow, org_id, agent_id, "  Dana@Example.com ", PASSWORD)
        uow.commit()
    yield system, org_id, agent_id
    system.close()


def sign_in(system: System, password: str = PASSWORD, email: str = EMAIL, ip: str = IP) -> console_auth.SignedIn:
    with system.bus.uow() as uow:
        return console_auth.sign_in(uow, email, password, ip, system.clock())


def live(system: System, token: str) -> bool:
    with system.bus.uow(read_only=True) as uow:
        return console_auth.session_for(uow, token, system.clock()) is not None


def test_the_password_is_stored_as_an_argon2_hash_and_the_token_as_a_digest(people: tuple[System, int, int]) -> None:
    system, _, agent_id = people
    signed_in = sign_in(system, email="DANA@example.com")
    assert signed_in.agent.id == agent_id and live(system, signed_in.token)
    with system.engine.connect() as conn:
        stored = conn.execute(select(orm.agents.c.email, orm.agents.c.password_hash)
                              .where(orm.agents.c.id == agent_id)).one()
        tokens = conn.execute(select(orm.console_sessions.c.token_hash)).scalars().all()
    assert stored.email == EMAIL and stored.password_hash.startswith("$argon2id$")
    assert PASSWORD not in stored.password_hash
    assert tokens and signed_in.token not in tokens


def test_sessions_end_after_their_lifetime_when_idle_and_on_sign_out(people: tuple[System, int, int],
                                                                      clock: Clock) -> None:
    system, _, _ = people
    first = sign_in(system)
    for _ in range(11):  # used every hour: the idle timeout never comes, the lifetime does
        clock.advance(hours=1)
        assert live(system, first.token)
        with system.bus.uow() as uow:
            session, _agent = console_auth.session_for(uow, first.token, clock()) or (None, None)
            assert session is not None
            console_auth.record_seen(uow, session.id, clock())
            uow.commit()
    clock.advance(hours=1)
    assert not live(system, first.token)

    idle = sign_in(system)
    clock.advance(hours=2)
    assert not live(system, idle.token)

    signed_out = sign_in(system)
    with system.bus.uow() as uow:
        console_auth.sign_out(uow, signed_out.token)
        uow.commit()
    assert not live(system, signed_out.token)


def test_a_new_password_ends_every_session_and_the_old_password(people: tuple[System, int, int]) -> None:
    system, org_id, agent_id = people
    session = sign_in(system)
    with system.bus.uow() as uow:
        console_auth.set_sign_in(uow, org_id, agent_id, EMAIL, "a brand new passphrase")
        uow.commit()
    assert not live(system, session.token)
    with pytest.raises(console_auth.SignInRefused):
        sign_in(system)
    assert live(system, sign_in(system, "a brand new passphrase").token)


def test_failures_are_slowed_then_the_account_is_locked(people: tuple[System, int, int], clock: Clock) -> None:
    system, _, _ = people
    for _ in range(3):  # the free tries
        with pytest.raises(console_auth.SignInRefused):
            sign_in(system, "wrong password")
    with pytest.raises(console_auth.SignInRefused):
        sign_in(system, "wrong password")
    # Four failures: the next attempt waits 15 s, and meanwhile even the right password is not checked.
    with pytest.raises(console_auth.SignInThrottled) as throttled:
        sign_in(system)
    assert throttled.value.retry_after.total_seconds() == 15
    waits = []
    for _ in range(6):  # failures 5 to 10, each after the wait the one before asked for
        with pytest.raises(console_auth.SignInThrottled) as throttled:
            sign_in(system, "wrong password")
        waits.append(throttled.value.retry_after.total_seconds())
        clock.advance(seconds=throttled.value.retry_after.total_seconds())
        with pytest.raises(console_auth.SignInRefused):
            sign_in(system, "wrong password")
    assert waits == [15, 30, 60, 120, 240, 480]
    # Ten failures: locked for 15 minutes, the right password included.
    with pytest.raises(console_auth.SignInThrottled) as locked:
        sign_in(system)
    assert locked.value.retry_after.total_seconds() == 15 * 60
    clock.advance(minutes=15)
    assert live(system, sign_in(system).token)
    # A success forgets the account's failures.
    with pytest.raises(console_auth.SignInRefused):
        sign_in(system, "wrong password")
    assert live(system, sign_in(system).token)


def test_failures_from_one_address_count_across_accounts(people: tuple[System, int, int]) -> None:
    system, _, _ = people
    for n in range(21):  # guessing many accounts from one address
        with pytest.raises(console_auth.SignInRefused):
            sign_in(system, "guess", email=f"person{n}@example.com")
    with pytest.raises(console_auth.SignInThrottled):
        sign_in(system)  # the right password, from that address
    assert live(system, sign_in(system, ip="198.51.100.1").token)  # from elsewhere it works


def test_an_unknown_email_is_refused_like_a_wrong_password(people: tuple[System, int, int]) -> None:
    system, _, _ = people
    with pytest.raises(console_auth.SignInRefused) as unknown:
        sign_in(system, email="nobody@example.com")
    with pytest.raises(console_auth.SignInRefused) as wrong:
        sign_in(system, "wrong password")
    assert str(unknown.value) == str(wrong.value)


def test_sign_in_details_are_checked(people: tuple[System, int, int]) -> None:
    system, org_id, _ = people
    other = new_agent(system, org_id, name="Lee").id
    with system.bus.uow() as uow:
        with pytest.raises(InvalidInput, match="at least 12 characters"):
            console_auth.set_sign_in(uow, org_id, other, "lee@example.com", "short")
        with pytest.raises(InvalidInput, match="not an email address"):
            console_auth.set_sign_in(uow, org_id, other, "lee at example", PASSWORD)
        with pytest.raises(TransitionRefused, match="already signs in"):
            console_auth.set_sign_in(uow, org_id, other, EMAIL.upper(), PASSWORD)
