"""The message bus: every command is handled in one unit of work and committed once.

It also keeps the promise that matters most: an opt-out is never lost. If handling an inbound
message fails for any reason that is not a business refusal (a broken template, a bug, a
database hiccup) and the message asks to stop, the opt-out alone is recorded in a fresh
transaction before the error goes on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..domain import commands as c
from ..domain.addresses import normalize_for_channel, written_as_e164
from ..domain.model import Channel, DomainError, Intent, NotFound
from ..domain.records import Audience, Direction, MessageStatus
from ..domain.redaction import mask_address
from ..domain.text import storable
from .handlers import (
    HANDLERS,
    Ahead,
    Services,
    classify_inbound,
    inbound_revocation,
    prerender_inbound,
    revoke,
    worked_out_ahead,
)
from .unit_of_work import UnitOfWork, UnitOfWorkFactory

log = logging.getLogger("optflow.bus")

RETRIES = 3
FALLBACK_BODY_CHARS = 1600  # the longest SMS Twilio delivers; the fallback keeps no more


Handler = Callable[..., Any]


@dataclass
class Handled:
    """One command of a batch, and what became of it: its handler's result, or the error it
    raised; `fallback_opt_out` when its opt-out was recorded by the fallback after a failure."""

    command: c.Command
    result: Any = None
    error: BaseException | None = None
    fallback_opt_out: bool = False
    alone: bool = False  # handled in a batch of its own after its group's transaction failed


BeforeCommit = Callable[[UnitOfWork, list[Handled]], None]


class MessageBus:
    """Runs commands, always in groups: `handle_batch` is the one transaction design of optflow.

    `handlers` maps each command type to its handler (handlers.HANDLERS and the flow engine's);
    the events a handler raises go to `services.subscribers` before the commit. A batch is one
    database transaction. It runs first without savepoints (`_run_plainly`); if any command fails
    or is refused, that run is rolled back whole and the batch runs again with one SAVEPOINT per
    command, so each command's failure stays its own:

    - a business refusal (`DomainError`) rolls back that command alone (or keeps what it wrote
      when the handler says the refusal must be stored, as a wrong PIN's attempt);
    - a conflict with a concurrent writer (`UnitOfWork.is_conflict`, e.g. the same MessageSid
      arriving at another worker) runs it again in a fresh savepoint, where a replay finds its first copy;
    - anything else rolls it back and, if it was an inbound opt-out, records the opt-out alone
      (`record_opt_out_only`: the same decision with rendering off) before the error goes back;
    - the ledger entries of the whole batch are chained at its commit (`LedgerQueue`);
    - if the transaction itself fails (the commit, the connection), nothing was acknowledged and
      each command is handled again in a batch of its own, which has the same fallback.

    The web workers group the commands of concurrent requests into one batch (group commit); the
    CLI, the scheduler and tests send batches of one through `handle`.
    """

    def __init__(self, uows: UnitOfWorkFactory, services: Services, clock: Callable[[], datetime],
                 handlers: Mapping[type, Handler] | None = None) -> None:
        self.uows = uows
        self.services = services
        self.clock = clock
        self.handlers: dict[type, Handler] = {**HANDLERS, **(handlers or {})}

    def uow(self, *, read_only: bool = False) -> UnitOfWork:
        """A unit of work of the bus's; `read_only` for lookups (see `UnitOfWork`)."""
        return self.uows(read_only=read_only)

    def handle(self, command: c.Command, now: datetime | None = None) -> Any:
        """Handle one command in a batch of its own; its result, or raise its error."""
        [done] = self.handle_batch([command], now=now)
        if done.error is not None:
            raise done.error
        return done.result

    def prerender(self, commands: Sequence[c.Command], now: datetime | None = None) -> Ahead:
        """Work out, in a read-only unit of work, what the batch's inbound messages will need
        (`handlers.prerender_inbound`: what their words ask for, the org overrides they will
        render); `handle_batch(prerendered=...)` then uses it. On SQLite a read-only unit of work
        takes no write lock: a web worker calls this before it waits for the lock, so this work
        is not serialised with every other writer's, and no admin's template runs while they
        wait. Never fails: what could not be worked out here is done in the transaction."""
        ahead = Ahead()
        inbound = [command for command in commands if isinstance(command, c.ReceiveInbound)]
        if not inbound:
            return ahead
        at = now or self.clock()
        try:
            with self.uow(read_only=True) as uow:
                for command in inbound:
                    try:
                        prerender_inbound(uow, self.services, command, at, ahead)
                    except DomainError:
                        continue  # refused in the transaction, where the refusal is answered
        except Exception:
            log.exception("could not work out the batch's readings and templates ahead of its transaction")
        return ahead

    def handle_batch(self, commands: Sequence[c.Command], *, now: datetime | None = None,
                     before_commit: BeforeCommit | None = None,
                     prerendered: Ahead | None = None) -> list[Handled]:
        """Handle `commands` in one transaction and commit it; each `Handled` then holds its
        result or its error. `before_commit` runs last inside the transaction (the web workers use
        it to send late replies through the provider's API instead); `prerendered` holds what
        `prerender` worked out for it."""
        batch = [Handled(command) for command in commands]
        try:
            self._transaction(batch, now, before_commit, prerendered, self._run_plainly)
        except Exception:
            # Not a failure yet: the batch runs again below, each command in a savepoint of its own (`_run`).
            for done in batch:
                done.result = None
        else:
            return batch
        for attempt in range(1, RETRIES + 1):
            try:
                self._transaction(batch, now, before_commit, prerendered, self._run)
            except Exception as exc:
                if len(batch) > 1:
                    log.exception("the group commit of %d commands failed; handling each on its own", len(batch))
                    alone = [self.handle_batch([done.command], now=now, before_commit=before_commit,
                                               prerendered=prerendered)[0] for done in batch]
                    for done in alone:
                        done.alone = True
                    return alone
                if attempt < RETRIES and self.uows.is_conflict(exc):
                    log.warning("retrying %s after a write conflict", type(batch[0].command).__name__)
                    continue
                [done] = batch
                done.result, done.error = None, exc
                done.fallback_opt_out = self._save_opt_out(done.command, now or self.clock(), exc)
                return batch
            for done in batch:
                if done.fallback_opt_out and isinstance(done.command, c.ReceiveInbound):
                    log.error("recorded the opt-out of %s on %s through the fallback path",
                              mask_address(done.command.from_address), done.command.channel.value)
            return batch
        raise AssertionError("unreachable")

    def _transaction(self, batch: list[Handled], now: datetime | None, before_commit: BeforeCommit | None,
                     prerendered: Ahead | None, run: Callable[[UnitOfWork, Handled, datetime | None], None]) -> None:
        """The batch's transaction, each command run by `run`; committed unless something raised."""
        with self.uow() as uow, worked_out_ahead(prerendered or Ahead()):
            if len(batch) > 1:
                uow.read_ahead(_senders(done.command for done in batch))
            for done in batch:
                run(uow, done, now)
            if before_commit is not None:
                before_commit(uow, batch)
            uow.commit()

    def _run_plainly(self, uow: UnitOfWork, done: Handled, now: datetime | None) -> None:
        """One command in the batch's transaction without a savepoint of its own: whatever it
        raises ends the transaction, and `handle_batch` runs the batch again with `_run`. Why: inside
        a savepoint SQLite copies every page a command changes, so that it can undo them; that was a
        tenth of an inbound message's time in the transaction, which writers take in turns
        (docs/performance.md, item 32), and a batch in which nothing fails, nearly every batch,
        has nothing to undo."""
        at = now or self.clock()
        done.result = self._handler(done.command)(done.command, uow, self.services, at)
        self.services.publish(uow, at)

    def _run(self, uow: UnitOfWork, done: Handled, now: datetime | None) -> None:
        """One command in its own savepoint of the batch's transaction (see the class)."""
        handler = self._handler(done.command)
        for attempt in range(1, RETRIES + 1):
            at = now or self.clock()
            done.result, done.error, done.fallback_opt_out = None, None, False
            try:
                with uow.savepoint():
                    uow.commit_on_error = False
                    try:
                        done.result = handler(done.command, uow, self.services, at)
                        self.services.publish(uow, at)
                    except DomainError as exc:
                        uow.events.clear()
                        if not uow.commit_on_error:
                            raise
                        done.error = exc  # the refusal stands, and what it wrote is kept
                return
            except DomainError as exc:
                done.error = exc
                return
            except Exception as exc:
                uow.events.clear()
                if attempt < RETRIES and self.uows.is_conflict(exc):
                    log.warning("retrying %s after %s", type(done.command).__name__, type(exc).__name__)
                    continue
                done.error = exc
            log.error("handling %s failed", type(done.command).__name__, exc_info=done.error)
            done.fallback_opt_out = self._fallback_in(uow, done.command, at)
            return

    def _handler(self, command: c.Command) -> Handler:
        try:
            return self.handlers[type(command)]
        except KeyError:
            raise TypeError(f"no handler for {type(command).__name__}") from None

    def _fallback_in(self, uow: UnitOfWork, command: c.Command, now: datetime) -> bool:
        """The opt-out of a failed inbound message, in a savepoint of the batch's transaction."""
        if not isinstance(command, c.ReceiveInbound):
            return False
        try:
            with uow.savepoint():
                return record_opt_out_only(uow, self.services, command, now)
        except Exception:
            log.exception("could not record the opt-out of %s", mask_address(command.from_address))
            return False

    def _save_opt_out(self, command: c.Command, now: datetime, error: BaseException) -> bool:
        """The opt-out of a failed inbound message, in a transaction of its own."""
        if not isinstance(command, c.ReceiveInbound):
            return False
        try:
            return save_opt_out_only(self.uows, self.services, command, now)
        except Exception:
            log.exception("could not record the opt-out of %s after %r", mask_address(command.from_address), error)
            return False


def _senders(commands: Iterable[c.Command]) -> list[tuple[int, str, Channel]]:
    """The senders of a batch's inbound messages, as their handler will look them up, for
    `UnitOfWork.read_ahead`: those whose org is known and whose address is written in normal
    form (the others are looked up one by one, as they would be anyway)."""
    senders = []
    for command in commands:
        if isinstance(command, c.ReceiveInbound) and command.org_id is not None:
            address = written_as_e164(command.from_address, command.channel)
            if address is not None:
                senders.append((command.org_id, address, command.channel))
    return senders


def save_opt_out_only(uows: UnitOfWorkFactory, services: Services, command: c.ReceiveInbound, now: datetime) -> bool:
    """The last line of defence: record an inbound opt-out with nothing but the machine and the
    ledger (no templates, no replies, no flows), in a transaction of its own. True if an opt-out
    was recorded."""
    with uows() as uow:
        recorded = record_opt_out_only(uow, services, command, now)
        if recorded:
            uow.commit()
    if recorded:
        log.error("recorded the opt-out of %s on %s through the fallback path", mask_address(command.from_address),
                  command.channel.value)
    return recorded


def record_opt_out_only(uow: UnitOfWork, services: Services, command: c.ReceiveInbound, now: datetime) -> bool:
    """`save_opt_out_only` inside the caller's unit of work (the group-commit batcher runs it in
    a savepoint of the batch's transaction); the caller commits. True if it is an opt-out.

    It is the inbound handler's opt-out decision itself (`handlers.revoke`, the same consent rules,
    the same scope across channels) with rendering switched off: no templates, no replies, no
    notes. The events go to their subscribers (flows end the contact's enrolments) in a savepoint
    of their own: should that fail too, the opt-out still stands, and the policy refuses every
    step a flow might still take on the closed channels."""
    org_id = command.org_id
    if org_id is None:
        org_id = uow.orgs.find_by_number(normalize_for_channel(command.to_address, command.channel))
        if org_id is None:
            raise NotFound(f"no org owns {command.to_address!r}", code="unknown_number")
    settings = uow.orgs.settings(org_id)
    classification = classify_inbound(services, settings, command.body, command.opt_out_type)
    if classification.intent is not Intent.OPT_OUT:
        return False
    address = normalize_for_channel(command.from_address, command.channel)
    contact = uow.contacts.at_address(org_id, address)
    # Only what cannot fail is stored: text made storable and cut short (see domain/text.py).
    body, provider_id = storable(command.body[:FALLBACK_BODY_CHARS]), storable(command.provider_id or "") or None
    stored = dataclasses.replace(command, body=body, provider_id=provider_id)
    revoke(uow, services, org_id, contact, inbound_revocation(address, stored, provider_id, classification), now,
           render_messages=False)
    try:
        with uow.savepoint():
            services.publish(uow, now)
    except Exception:
        uow.events.clear()
        log.exception("the fallback recorded an opt-out but could not take the contact out of its flows")
    if provider_id and uow.messages.find_inbound(org_id, provider_id) is None:
        # Keep the message too, so the provider's retry of it is recognised as a duplicate; in a
        # savepoint of its own, so that even a failure here cannot take the opt-out with it.
        try:
            with uow.savepoint():
                uow.messages.add(org_id=org_id, contact_id=contact.id if contact else None, direction=Direction.IN,
                                 audience=Audience.CUSTOMER, channel=command.channel.value, address=address,
                                 org_address=storable(command.to_address), body=body,
                                 status=MessageStatus.RECEIVED,
                                 intent=Intent.OPT_OUT.value, provider_id=provider_id, reply_text="[]",
                                 created_at=now)
        except Exception:
            log.exception("the fallback recorded the opt-out but could not store its message")
    return True
