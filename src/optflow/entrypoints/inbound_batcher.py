"""Group commit for inbound messages: every message a web worker has queued is handled in one
database transaction, and each webhook is answered only after that transaction is durable.

Why: one commit per message caps a web worker at about a quarter of what the HTTP stack can
serve, because the commit (and, on SQLite, taking the write lock) costs more than handling the
message; committing everything that queued up meanwhile in one transaction measured 2-3 times
faster (docs/performance.md). Latency does not suffer: a message waits at most for the batch
in front of it.

How: a request puts its command and a future in the queue and awaits the future. One consumer
task per worker takes everything queued, runs each command in a SAVEPOINT of one transaction on
the event loop's own thread (a hop to a thread pool costs more than handling a message), commits
once, and only then resolves the futures. The savepoint keeps each message's failure to itself:

- a business refusal (`DomainError`) rolls back that message alone and goes to its request;
- a conflict with a concurrent writer (`IntegrityError`, `OperationalError`, e.g. the same
  MessageSid arriving at the other worker) is retried in a fresh savepoint, and a replayed message
  then finds its first copy;
- anything else rolls back that message, is logged, and, if the message asks to stop, the
  opt-out alone is recorded (`record_opt_out_only`) before the error goes to its request: an
  opt-out is never lost to a broken template or a bug;
- if the transaction itself fails (the commit, the connection), nothing was acknowledged, and
  every message of the batch is handled again on its own through the message bus, which has the
  same retry and opt-out fallback.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError, OperationalError

from ..adapters.db import WriterLock, writer_lock
from ..adapters.repository import LedgerQueue, LedgerRepository, OrgMemo
from ..domain import commands as c
from ..domain.model import DomainError
from ..domain.redaction import mask_address
from ..service_layer.handlers import InboundResult
from ..service_layer.late_replies import REPLY_BUDGET_S, send_through_api
from ..service_layer.messagebus import RETRIES, MessageBus, record_opt_out_only
from ..service_layer.unit_of_work import UnitOfWork

log = logging.getLogger("optflow.inbound")

MAX_BATCH = 256
# How many times the consumer lets the event loop run before taking a batch, while requests keep
# arriving: a request needs a few loop iterations between its bytes being read and its command
# being queued, so yielding once would cut batches short under load.
GATHER_ROUNDS = 4
# SQLite: how often a worker waiting for the write lock looks again, and how long one that just
# committed leaves it to the others before it tries again (it keeps serving requests meanwhile).
LOCK_POLL_S = 0.0005
HAND_OVER_S = 0.001


@dataclass
class _Pending:
    command: c.ReceiveInbound
    future: asyncio.Future[InboundResult]
    received_at: float  # the batcher's `monotonic` clock when the request arrived
    result: InboundResult | None = None
    error: BaseException | None = None
    fallback_opt_out: bool = False


@dataclass
class _Shared:
    """What the messages of one group commit share: the orgs read, and the ledger entries to
    write at its end (one lock of each chain's head per transaction, see `LedgerQueue`)."""

    orgs: OrgMemo = field(default_factory=OrgMemo)
    ledger: LedgerQueue = field(default_factory=LedgerQueue)


class InboundBatcher:
    """Handles inbound messages in groups, one durable commit per group. Build it in a web
    worker, `start()` it on that worker's event loop, `await submit(command)` from requests,
    and `await close()` when the worker stops."""

    def __init__(self, bus: MessageBus, *, max_batch: int = MAX_BATCH, reply_budget: float = REPLY_BUDGET_S,
                 monotonic: Callable[[], float] = time.perf_counter) -> None:
        self.bus = bus
        self.max_batch = max_batch
        self.reply_budget = reply_budget  # seconds from receipt within which replies go in the answer
        self.monotonic = monotonic
        self._queue: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.batches = 0  # group commits that succeeded, and the messages in them
        self.messages = 0

    def start(self) -> None:
        """Start the consumer task on the running event loop."""
        if self._task is not None:
            raise RuntimeError("the inbound batcher is already running")
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._consume(), name="optflow-inbound-batcher")

    async def submit(self, command: c.ReceiveInbound, received_at: float | None = None) -> InboundResult:
        """Queue one inbound message and return its outcome once it is committed. Raises what
        handling it raised (a `DomainError` for a refusal). `received_at` (on the `monotonic`
        clock; default now) starts the reply budget."""
        if self._closed or self._task is None or self._wake is None:
            # Not running (stopping, or never started): handle it alone, still committed first.
            result: InboundResult = self.bus.handle(command)
            return result
        future: asyncio.Future[InboundResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(command, future, self.monotonic() if received_at is None else received_at))
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Handle what is still queued, then stop the consumer."""
        self._closed = True
        while self._queue:
            self._take_and_commit()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # ------------------------------------------------------------------------------ consumer

    async def _consume(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._gather()
            while self._queue:
                lock = await self._writer_turn()
                try:
                    self._take_and_commit()
                finally:
                    if lock is not None:
                        lock.cancel_reservation()  # only if the batch never began its transaction
                # Let answered requests go out and newly read ones queue before the next batch;
                # on SQLite, long enough for the other workers to take their turn first.
                await asyncio.sleep(HAND_OVER_S if lock is not None else 0)

    async def _writer_turn(self) -> WriterLock | None:
        """On SQLite, wait for the write lock without blocking the event loop and reserve it for
        the batch's transaction. Blocking in the lock, a worker could neither read nor answer
        requests while another worker's group commit ran (28% of a worker's time under load,
        docs/performance.md); polling, it reads them and they join its next batch."""
        lock = writer_lock(self.bus.engine)
        if lock is None:
            return None
        while not lock.try_reserve():
            await asyncio.sleep(LOCK_POLL_S)
        return lock

    async def _gather(self) -> None:
        """Yield to the event loop while that brings more requests into the queue."""
        for _ in range(GATHER_ROUNDS):
            if len(self._queue) >= self.max_batch:
                return
            before = len(self._queue)
            await asyncio.sleep(0)
            if len(self._queue) == before:
                return

    def _take_and_commit(self) -> None:
        batch = self._queue[:self.max_batch]
        del self._queue[:self.max_batch]
        try:
            self.commit_batch(batch)
        except BaseException as exc:  # never leave a request waiting forever
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            raise
        for pending in batch:
            if pending.future.done():  # the request went away (client disconnected)
                continue
            if pending.error is not None:
                pending.future.set_exception(pending.error)
            else:
                pending.future.set_result(pending.result)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------ one batch

    def commit_batch(self, batch: list[_Pending]) -> None:
        """Handle `batch` in one transaction and commit it; afterwards each entry holds its
        result or its error. Synchronous: runs on the caller's thread."""
        try:
            shared = _Shared()
            with self.bus.engine.connect() as conn, conn.begin():
                for pending in batch:
                    self._handle_one(conn, shared, pending)
                self._late_replies_through_api(conn, shared, batch)
                LedgerRepository(conn, shared.ledger).flush()
            # Leaving the block committed; only now is anything acknowledged.
        except Exception:
            log.exception("the group commit of %d inbound message(s) failed; handling each on its own", len(batch))
            self._one_by_one(batch)
            return
        self.batches += 1
        self.messages += len(batch)
        for pending in batch:
            if pending.fallback_opt_out:
                log.error("recorded the opt-out of %s on %s through the fallback path",
                          mask_address(pending.command.from_address), pending.command.channel.value)

    def _handle_one(self, conn: Connection, shared: _Shared, pending: _Pending) -> None:
        command = pending.command
        for attempt in range(1, RETRIES + 1):
            now = self.bus.clock()
            pending.result, pending.error = None, None
            try:
                with UnitOfWork(connection=conn, org_memo=shared.orgs, ledger_queue=shared.ledger) as uow:
                    try:
                        pending.result = self.bus.handle_in(uow, command, now)
                    except DomainError as exc:
                        if uow.commit_on_error:
                            uow.commit()
                        pending.error = exc
                        return
                    uow.commit()
                return
            except (IntegrityError, OperationalError) as exc:
                # The savepoint is rolled back; run again on fresh reads (a message the other
                # worker stored meanwhile is then found as a duplicate).
                if attempt < RETRIES:
                    log.warning("retrying an inbound message after %s", exc.__class__.__name__)
                    continue
                pending.error = exc
            except Exception as exc:
                pending.error = exc
            log.error("handling the inbound message %s failed", command.provider_id, exc_info=pending.error)
            self._fallback(conn, shared, pending)
            return

    def _late_replies_through_api(self, conn: Connection, shared: _Shared, batch: list[_Pending]) -> None:
        """Replies whose request went away, or whose answer would leave after the reply budget,
        go through the provider's API instead (`late_replies`), decided in the batch's own
        transaction just before it commits."""
        deadline = self.monotonic() - self.reply_budget
        for pending in batch:
            result = pending.result
            if result is None or not result.replies or result.duplicate:
                continue
            if not pending.future.done() and pending.received_at >= deadline:
                continue
            try:
                with UnitOfWork(connection=conn, org_memo=shared.orgs, ledger_queue=shared.ledger) as uow:
                    send_through_api(uow, result, self.bus.clock())
                    uow.commit()
            except Exception:
                log.exception("could not hand the late replies to message %s to the outbox", result.message_id)
                continue
            pending.result = dataclasses.replace(result, replies=())

    def _fallback(self, conn: Connection, shared: _Shared, pending: _Pending) -> None:
        try:
            with UnitOfWork(connection=conn, org_memo=shared.orgs, ledger_queue=shared.ledger) as uow:
                if record_opt_out_only(uow, self.bus.services, pending.command, self.bus.clock()):
                    uow.commit()
                    pending.fallback_opt_out = True
        except Exception:
            log.exception("could not record the opt-out of %s after %r", mask_address(pending.command.from_address),
                          pending.error)

    def _one_by_one(self, batch: list[_Pending]) -> None:
        for pending in batch:
            pending.result, pending.error, pending.fallback_opt_out = None, None, False
            try:
                pending.result = self.bus.handle(pending.command)
            except Exception as exc:
                pending.error = exc
