"""Which org owns an inbound number, with its settings, remembered for a moment by each web worker."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ..domain.model import NotFound
from ..domain.settings import OrgSettings
from ..service_layer.messagebus import MessageBus
from .errors import ApiError

REMEMBER_S = 1.0


@dataclass(frozen=True)
class _Entry:
    org_id: int
    settings: OrgSettings
    read_at: float


class OrgDirectory:
    """Every webhook needs its org's settings before anything else, to check the signature, and
    reading them took a database transaction per request (13% of a web worker's time under
    load, docs/performance.md). A worker now remembers each number's org and settings for
    `remember_s` seconds.

    What that means for changes: the consent pipeline itself reads the settings again inside each
    message's own transaction, so only the signature check can see settings up to `remember_s`
    old. A request that fails the check against remembered settings is checked again against
    fresh ones (`authenticated`), so a rotated auth token works at once; a replaced
    token keeps working for at most `remember_s` more. Unknown numbers are never remembered."""

    def __init__(self, bus: MessageBus, *, remember_s: float = REMEMBER_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.bus = bus
        self.remember_s = remember_s
        self.clock = clock
        self._entries: dict[str, _Entry] = {}

    def authenticated(self, number: str, check: Callable[[OrgSettings], None]) -> tuple[int, OrgSettings]:
        """The org owning `number` (E.164) and its settings, once `check(settings)` passed; it
        raises `ApiError` when the request is not authentic, and one that fails against remembered
        settings is checked again against fresh ones. `NotFound` when no org owns the number."""
        entry, fresh = self._entry(number, fresh=False)
        try:
            check(entry.settings)
        except ApiError:
            if fresh:
                raise
            entry, _ = self._entry(number, fresh=True)
            check(entry.settings)
        return entry.org_id, entry.settings

    def _entry(self, number: str, *, fresh: bool) -> tuple[_Entry, bool]:
        now = self.clock()
        entry = self._entries.get(number)
        if not fresh and entry is not None and now - entry.read_at < self.remember_s:
            return entry, False
        with self.bus.uow(read_only=True) as uow:
            org_id = uow.orgs.find_by_number(number)
            if org_id is None:
                self._entries.pop(number, None)
                raise NotFound(f"no org owns the number {number}", code="unknown_number")
            entry = self._entries[number] = _Entry(int(org_id), uow.orgs.settings(org_id), now)
        return entry, True
