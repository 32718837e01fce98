"""Group commit for a web worker: the commands of every request a worker has queued (inbound
messages, and agents' actions through the API) are handled in one database transaction, and each
request is answered only after that transaction is durable.

Why: one commit per message caps a web worker at about a quarter of what the HTTP stack can
serve, because the commit (and, on SQLite, taking the write lock) costs more than handling the
message; committing everything that queued up meanwhile in one transaction measured 2-3 times
faster (docs/performance.md). Latency does not suffer: a message waits at most for the batch
in front of it.

How: a request puts its command and a future in the queue and awaits the future. One consumer
task per worker takes everything queued and hands it to the message bus as one batch
(`MessageBus.handle_batch`: a savepoint per command, retries, the opt-out fallback, the ledger
flush, all in the service layer) on the event loop's own thread (a hop to a thread pool costs
more than handling a message), and only then resolves the futures. On SQLite it first waits for
the write lock without blocking the loop. Just before the commit, replies that can no longer
reach their caller in time are handed to the provider's API instead (`late_replies`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..bootstrap import System
from ..domain import commands as c
from ..service_layer.handlers import Ahead, InboundResult
from ..service_layer.late_replies import REPLY_BUDGET_S, send_through_api
from ..service_layer.messagebus import Handled
from ..service_layer.unit_of_work import UnitOfWork

log = logging.getLogger("optflow.inbound")

MAX_BATCH = 256
# How many times the consumer lets the event loop run before taking a batch, while requests keep
# arriving: a request needs a few loop iterations between its bytes being read and its command
# being queued, so yielding once would cut batches short under load.
GATHER_ROUNDS = 4
# SQLite: how long a worker that just committed leaves the write lock to the others before it
# tries again (it keeps serving requests meanwhile).
HAND_OVER_S = 0.001
# SQLite: how long a worker whose batch is ready keeps trying for the write lock between turns of
# its event loop before a helper thread waits for it instead. Longer than another worker's group
# commit under load (5-10 ms), so the lock changes hands at once; bounded, so that a long write
# (an import, the scheduler's dispatch) does not keep a worker spinning.
LOCK_SPIN_S = 0.02
LOCK_WAITER_THREAD = "optflow-writer-wait"


@dataclass
class _Pending:
    command: c.Command
    future: asyncio.Future[Any]
    received_at: float  # the batcher's `monotonic` clock when the request arrived
    result: Any = None
    error: BaseException | None = None


class InboundBatcher:
    """Handles inbound messages in groups, one durable commit per group. Build it in a web
    worker, `start()` it on that worker's event loop, `await submit(command)` from requests,
    and `await close()` when the worker stops."""

    def __init__(self, system: System, *, max_batch: int = MAX_BATCH, reply_budget: float = REPLY_BUDGET_S,
                 monotonic: Callable[[], float] = time.perf_counter) -> None:
        self.system = system
        self.bus = system.bus
        self.max_batch = max_batch
        self.reply_budget = reply_budget  # seconds from receipt within which replies go in the answer
        self.monotonic = monotonic
        self._queue: list[_Pending] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._lock_waiter: ThreadPoolExecutor | None = None  # waits for SQLite's write lock
        self.batches = 0  # group commits that succeeded, and the messages in them
        self.messages = 0

    def start(self) -> None:
        """Start the consumer task on the running event loop."""
        if self._task is not None:
            raise RuntimeError("the inbound batcher is already running")
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._consume(), name="optflow-inbound-batcher")

    async def submit(self, command: c.Command, received_at: float | None = None) -> Any:
        """Queue one inbound message and return its outcome once it is committed. Raises what
        handling it raised (a `DomainError` for a refusal). `received_at` (on the `monotonic`
        clock; default now) starts the reply budget."""
        if self._closed or self._task is None or self._wake is None:
            # Not running (stopping, or never started): handle it alone, still committed first.
            result: InboundResult = self.bus.handle(command)
            return result
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(command, future, self.monotonic() if received_at is None else received_at))
        self._wake.set()
        return await future

    async def close(self) -> None:
        """Handle what is still queued, then stop the consumer."""
        self._closed = True
        while self._queue:
            self._take_and_commit(self._prerender())
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._lock_waiter is not None:
            self._lock_waiter.shutdown(wait=False)
            self._lock_waiter = None

    # ------------------------------------------------------------------------------ consumer

    async def _consume(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._gather()
            while self._queue:
                # What can be worked out before the write lock is (admins' templates, the readings of
                # the messages' words); what arrives meanwhile joins the batch and is done in its transaction.
                ahead = self._prerender()
                lock = await self._writer_turn()
                try:
                    self._take_and_commit(ahead)
                finally:
                    if lock is not None:
                        lock.cancel_reservation()  # only if the batch never began its transaction
                # Let answered requests go out and newly read ones queue before the next batch;
                # on SQLite, long enough for the other workers to take their turn first.
                await asyncio.sleep(HAND_OVER_S if lock is not None else 0)

    async def _writer_turn(self) -> Any:
        """On SQLite, wait for the write lock without blocking the event loop and reserve it for
        the batch's transaction. Blocking in the lock, a worker could neither read nor answer
        requests while another worker's group commit ran (28% of a worker's time under load,
        docs/performance.md). So the loop tries `try_reserve` between its turns, reading requests
        (which join the batch) meanwhile, for up to `LOCK_SPIN_S`; then a helper thread waits
        until the lock is free and wakes the loop, which tries again. Only trying, the loop noticed
        a free lock at once but spent a worker's CPU on it however long the other writer took;
        only waiting in the helper thread (which needs the GIL to wake the loop), the lock sat
        free for a fifth of the time under load (docs/performance.md, item 31). (A lock reserved by
        the helper thread itself sat idle while the loop finished other work.)"""
        lock = self.system.writer_lock()
        if lock is None:
            return None
        loop = asyncio.get_running_loop()
        spin_until = self.monotonic() + LOCK_SPIN_S
        while not lock.try_reserve():
            if self.monotonic() < spin_until:
                await asyncio.sleep(0)
                continue
            if self._lock_waiter is None:
                self._lock_waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix=LOCK_WAITER_THREAD)
            await loop.run_in_executor(self._lock_waiter, lock.wait_until_free)
            spin_until = self.monotonic() + LOCK_SPIN_S
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

    def _prerender(self) -> Ahead:
        """What the next batch needs that can be worked out before its transaction (`MessageBus.prerender`)."""
        return self.bus.prerender([pending.command for pending in self._queue[:self.max_batch]])

    def _take_and_commit(self, prerendered: Ahead) -> None:
        batch = self._queue[:self.max_batch]
        del self._queue[:self.max_batch]
        try:
            self.commit_batch(batch, prerendered)
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

    def commit_batch(self, batch: list[_Pending], prerendered: Ahead | None = None) -> None:
        """Handle `batch` in one transaction and commit it; afterwards each entry holds its
        result or its error. Synchronous: runs on the caller's thread."""
        handled = self.bus.handle_batch([pending.command for pending in batch], prerendered=prerendered,
                                        before_commit=lambda uow, done: self._late_replies(uow, batch, done))
        for pending, done in zip(batch, handled, strict=True):
            pending.result, pending.error = done.result, done.error
        if not any(done.alone for done in handled):  # one group commit, not each on its own after a failure
            self.batches += 1
            self.messages += len(batch)

    def _late_replies(self, uow: UnitOfWork, batch: list[_Pending], handled: list[Handled]) -> None:
        """Replies whose request went away, or whose answer would leave after the reply budget,
        go through the provider's API instead (`late_replies`), decided in the batch's own
        transaction just before it commits."""
        deadline = self.monotonic() - self.reply_budget
        requests = {id(pending.command): pending for pending in batch}
        for done in handled:  # the whole batch, or one command of it handled again on its own
            pending = requests[id(done.command)]
            result = done.result
            if not isinstance(result, InboundResult) or not result.replies or result.duplicate:
                continue
            if not pending.future.done() and pending.received_at >= deadline:
                continue
            try:
                with uow.savepoint():
                    send_through_api(uow, result, self.bus.clock())
            except Exception:
                log.exception("could not hand the late replies to message %s to the outbox", result.message_id)
                continue
            done.result = dataclasses.replace(result, replies=())

