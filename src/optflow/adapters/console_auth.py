"""The console's sign-in rows: people's sessions and the failed sign-ins counted per key."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, delete, insert, select, update

from ..domain.records import ConsoleSession
from ..domain.sign_in import FailureCount
from . import orm


class ConsoleSessionRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def create(self, agent_id: int, token_hash: str, now: datetime, expires_at: datetime) -> int:
        result = self.conn.execute(insert(orm.console_sessions).values(
            agent_id=agent_id, token_hash=token_hash, created_at=now, last_seen_at=now, expires_at=expires_at))
        key = result.inserted_primary_key
        assert key is not None
        return int(key[0])

    def by_token_hash(self, token_hash: str) -> ConsoleSession | None:
        t = orm.console_sessions.c
        row = self.conn.execute(select(t.id, t.agent_id, t.created_at, t.last_seen_at, t.expires_at)
                                .where(t.token_hash == token_hash)).first()
        return ConsoleSession(*row) if row is not None else None

    def touch(self, session_id: int, now: datetime) -> None:
        t = orm.console_sessions
        self.conn.execute(update(t).where(t.c.id == session_id).values(last_seen_at=now))

    def delete(self, session_id: int) -> None:
        self.conn.execute(delete(orm.console_sessions).where(orm.console_sessions.c.id == session_id))

    def delete_for_agent(self, agent_id: int) -> int:
        """Sign the person out everywhere (a new password, a role change). Returns how many."""
        result = self.conn.execute(delete(orm.console_sessions).where(orm.console_sessions.c.agent_id == agent_id))
        return int(result.rowcount or 0)

    def delete_expired(self, now: datetime) -> int:
        result = self.conn.execute(delete(orm.console_sessions).where(orm.console_sessions.c.expires_at <= now))
        return int(result.rowcount or 0)


class SignInFailureRepository:
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, key: str) -> FailureCount:
        t = orm.sign_in_failures.c
        row = self.conn.execute(select(t.failures, t.last_failure_at).where(t.key == key)).first()
        return FailureCount(*row) if row is not None else FailureCount(0, None)

    def record(self, key: str, failures: int, now: datetime) -> None:
        """Store `failures` (already counting this one) for `key`, the last one at `now`."""
        t = orm.sign_in_failures
        changed = self.conn.execute(update(t).where(t.c.key == key).values(failures=failures, last_failure_at=now))
        if not changed.rowcount:
            self.conn.execute(insert(t).values(key=key, failures=failures, last_failure_at=now))

    def clear(self, key: str) -> None:
        self.conn.execute(delete(orm.sign_in_failures).where(orm.sign_in_failures.c.key == key))
