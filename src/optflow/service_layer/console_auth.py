"""People signing in to the console: passwords (argon2), sessions, and the slowing down of
repeated failures (`domain/sign_in.py`). API tokens stay for machines (`admin.py`).

A session is a row holding the hash of a random token; the browser keeps the token in a cookie.
It ends when the person signs out, after `SESSION_LIFETIME`, or after `IDLE_TIMEOUT` without a
request; a new password or role ends every session of the person.
"""

from __future__ import annotations

import functools
import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from ..domain.model import DomainError, InvalidInput, TransitionRefused
from ..domain.records import Agent, ConsoleSession
from ..domain.sign_in import ACCOUNT_RULE, ADDRESS_RULE, ThrottleRule
from .unit_of_work import UnitOfWork

SESSION_LIFETIME = timedelta(hours=12)
IDLE_TIMEOUT = timedelta(hours=2)
# How often `last_seen_at` is written: not on every page (on SQLite each write takes the lock).
SEEN_PRECISION = timedelta(minutes=1)
MIN_PASSWORD_CHARS = 12
MAX_PASSWORD_CHARS = 1024
MAX_EMAIL_CHARS = 320


class SignInRefused(DomainError):
    """Wrong email or password (which one is not said)."""

    code = "sign_in_refused"


class SignInThrottled(DomainError):
    """Too many failures on this account or from this address: try again after `retry_after`."""

    code = "sign_in_throttled"

    def __init__(self, message: str, retry_after: timedelta) -> None:
        super().__init__(message, code=self.code)
        self.retry_after = retry_after


@dataclass(frozen=True)
class SignedIn:
    token: str  # for the cookie; only its hash is stored
    session_id: int
    agent: Agent
    expires_at: datetime


@functools.cache
def _hasher() -> PasswordHasher:
    return PasswordHasher()  # argon2id with the library's current recommended parameters


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def person_email(raw: str) -> str:
    """A person's sign-in email in its one stored form (trimmed, lower case)."""
    email = (raw or "").strip().lower()
    if not 3 <= len(email) <= MAX_EMAIL_CHARS or email.count("@") != 1 or any(ch.isspace() for ch in email) \
            or email.startswith("@") or email.endswith("@"):
        raise InvalidInput(f"{raw[:80]!r} is not an email address", code="invalid_email")
    return email


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"a password needs at least {MIN_PASSWORD_CHARS} characters", code="password_too_short")
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidInput(f"a password has at most {MAX_PASSWORD_CHARS} characters", code="password_too_long")


def set_sign_in(uow: UnitOfWork, org_id: int, agent_id: int, email: str, password: str) -> Agent:
    """Give a person (an agent row) a console sign-in, or a new password; ends their sessions."""
    agent = uow.agents.in_org(org_id, agent_id)
    email = person_email(email)
    check_password(password)
    owner = uow.agents.by_email(email)
    if owner is not None and owner.id != agent.id:
        raise TransitionRefused(f"{email} already signs in as agent {owner.id}", code="email_taken")
    uow.agents.update(agent.id, email=email, password_hash=_hasher().hash(password))
    uow.console_sessions.delete_for_agent(agent.id)
    return uow.agents.in_org(org_id, agent_id)


def _keys(email: str, ip: str) -> list[tuple[str, ThrottleRule]]:
    account = "account:" + hashlib.sha256(email.encode()).hexdigest()  # no email in the table
    return [(account, ACCOUNT_RULE), ("ip:" + ip[:64], ADDRESS_RULE)]


def _password_matches(agent: Agent | None, password: str) -> bool:
    if agent is None or not agent.password_hash:
        # Hash anyway, so an unknown email takes as long as a wrong password.
        _hasher().hash(password)
        return False
    try:
        return _hasher().verify(agent.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def sign_in(uow: UnitOfWork, email: str, password: str, ip: str, now: datetime) -> SignedIn:
    """Check the email and password and open a session; commits. A refusal is committed too (it
    counts): raises `SignInThrottled` when the account or address must wait (the password is
    not even checked), `SignInRefused` when they do not match. Slow on purpose (argon2): call it
    off the event loop."""
    try:
        email = person_email(email)
    except InvalidInput:
        email = (email or "").strip().lower()[:MAX_EMAIL_CHARS]
    keys = _keys(email, ip)
    counts = [(key, rule, uow.sign_in_failures.get(key)) for key, rule in keys]
    wait = max(rule.wait(count.failures, count.last_failure_at, now) for _, rule, count in counts)
    if wait > timedelta(0):
        seconds = max(1, int(wait.total_seconds() + 0.999))
        raise SignInThrottled(f"too many failed sign-ins; try again in {seconds} seconds", timedelta(seconds=seconds))
    agent = uow.agents.by_email(email) if len(password) <= MAX_PASSWORD_CHARS else None
    if not _password_matches(agent, password):
        for key, rule, count in counts:
            uow.sign_in_failures.record(key, rule.counts(count.failures, count.last_failure_at, now) + 1, now)
        uow.commit()
        raise SignInRefused("wrong email or password")
    assert agent is not None and agent.password_hash is not None
    uow.sign_in_failures.clear(keys[0][0])
    if _hasher().check_needs_rehash(agent.password_hash):
        uow.agents.update(agent.id, password_hash=_hasher().hash(password))
    token = secrets.token_urlsafe(32)
    expires_at = now + SESSION_LIFETIME
    session_id = uow.console_sessions.create(agent.id, _token_hash(token), now, expires_at)
    uow.console_sessions.delete_expired(now)  # sessions past their lifetime: a few rows at most
    uow.commit()
    return SignedIn(token, session_id, agent, expires_at)


def session_for(uow: UnitOfWork, token: str, now: datetime) -> tuple[ConsoleSession, Agent] | None:
    """The live session of `token` and its person, or None (unknown, expired, idle too long, or
    the person's sign-in was removed)."""
    if not token or len(token) > 200:
        return None
    session = uow.console_sessions.by_token_hash(_token_hash(token))
    if session is None or now >= session.expires_at or now - session.last_seen_at >= IDLE_TIMEOUT:
        return None
    agent = uow.agents.get(session.agent_id)
    if agent is None or not agent.password_hash:
        return None
    return session, agent


def seen_is_stale(session: ConsoleSession, now: datetime) -> bool:
    return now - session.last_seen_at >= SEEN_PRECISION


def record_seen(uow: UnitOfWork, session_id: int, now: datetime) -> None:
    uow.console_sessions.touch(session_id, now)


def sign_out(uow: UnitOfWork, token: str) -> None:
    session = uow.console_sessions.by_token_hash(_token_hash(token)) if token else None
    if session is not None:
        uow.console_sessions.delete(session.id)
