"""How the console answers repeated failed sign-ins: slowed first, then locked.

Failures are counted per account and per IP address (each a "key"). After a few failures the
next attempt on that key must wait, doubling with each failure; after more, the key is
locked for a while. A failure older than the window no longer counts. Nobody sleeps: an attempt
that comes too early is refused with the time left (HTTP 429 with Retry-After), without checking
the password, so guessing gains nothing by hammering.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True, slots=True)
class FailureCount:
    failures: int
    last_failure_at: datetime | None


@dataclass(frozen=True)
class ThrottleRule:
    free_failures: int  # failures allowed before attempts are slowed
    lock_after: int  # failures after which the key is locked
    lock_for: timedelta
    first_pause: timedelta  # the wait after the first failure past the free ones; doubles with each
    window: timedelta  # a failure older than this (counted from the last one) is forgotten

    def wait(self, failures: int, last_failure_at: datetime | None, now: datetime) -> timedelta:
        """How long an attempt on a key with `failures` (the last at `last_failure_at`) must
        still wait; zero when it may go ahead now."""
        if last_failure_at is None or failures <= self.free_failures or now - last_failure_at >= self.window:
            return timedelta(0)
        if failures >= self.lock_after:
            pause = self.lock_for
        else:
            pause = self.first_pause * 2 ** (failures - self.free_failures - 1)
        return max(timedelta(0), last_failure_at + pause - now)

    def counts(self, failures: int, last_failure_at: datetime | None, now: datetime) -> int:
        """The failures still counted at `now` (0 once the window since the last one passed)."""
        if last_failure_at is None or now - last_failure_at >= self.window:
            return 0
        return failures


# An account: 3 free tries, then waits of 15 s, 30 s, 1 min ... and locked for 15 minutes after 10.
ACCOUNT_RULE = ThrottleRule(free_failures=3, lock_after=10, lock_for=timedelta(minutes=15),
                            first_pause=timedelta(seconds=15), window=timedelta(minutes=15))
# An IP address (an office shares one): more room, the same lock.
ADDRESS_RULE = ThrottleRule(free_failures=20, lock_after=50, lock_for=timedelta(minutes=15),
                            first_pause=timedelta(seconds=5), window=timedelta(minutes=15))
