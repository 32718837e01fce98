"""In-process cost of the inbound pipeline: CPU time and SQL statements per message, without HTTP.

    python -m bench.inprocess                 # 10k dataset, 3,000 messages in group commits of 32
    python -m bench.inprocess --profile       # the same under cProfile (top functions by own time)

Runs the same traffic as the inbound scenario (bench/load.py's mix) through
`InboundBatcher.commit_batch` on a fresh copy of the cached 10k SQLite database. On SQLite this is
the part of a message that is serialised between web workers, so it bounds throughput.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import tempfile
import time
from pathlib import Path

from sqlalchemy import event

from optflow.bootstrap import System
from optflow.domain import commands as c
from optflow.domain.model import Channel
from optflow.entrypoints.inbound_batcher import InboundBatcher, _Pending

from . import datasets as ds
from .load import pick_body
from .scenarios import flows_directory, in_process

REPO = Path(__file__).resolve().parent.parent


def commands(count: int, seed: int = 7) -> list[c.ReceiveInbound]:
    rng = random.Random(seed)
    senders = [ds.contact_number(rng.randint(1, ds.SMALL.traffic_contacts)) for _ in range(count)]
    return [c.ReceiveInbound(channel=Channel.TEXT, from_address=sender, to_address=ds.ORG_NUMBER, body=pick_body(rng),
                             provider_id=f"SMinproc{n:024x}", org_id=1) for n, sender in enumerate(senders)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inprocess", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=3000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the run")
    parser.add_argument("--sort", default="tottime", help="cProfile's sort key (tottime, cumulative, ...)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="optflow-inproc-") as tmp:
        work = Path(tmp)
        url = ds.working_copy(ds.cached_sqlite(ds.SMALL), work / "10k.db")
        flows = flows_directory(work / "flows", REPO / "flows", ds.BENCH_FLOWS_DIR)
        with in_process(url, flows, as_web_worker=True) as system:
            measure(system, args)
    return 0


class _Waiting:
    """Stands for the future of a request that has not gone away: its replies go in the answer."""

    def done(self) -> bool:
        return False


def measure(system: System, args: argparse.Namespace) -> None:
    statements = 0

    def count(*_: object) -> None:
        nonlocal statements
        statements += 1

    # Counted by the driver: statements run through `Prepared` bypass SQLAlchemy's events.
    event.listen(system.engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(count))
    system.engine.dispose()
    batcher = InboundBatcher(system.bus)

    def pending(cmd: c.ReceiveInbound) -> _Pending:
        """A message whose request is waiting for its answer, arrived just now."""
        return _Pending(cmd, _Waiting(), batcher.monotonic())  # type: ignore[arg-type]

    warmup, measured = commands(300, seed=1), commands(args.messages)
    batcher.commit_batch([pending(cmd) for cmd in warmup])
    statements = 0
    profiler = cProfile.Profile() if args.profile else None
    started_cpu, started = time.process_time(), time.perf_counter()
    if profiler:
        profiler.enable()
    failed = 0
    for i in range(0, len(measured), args.batch):
        batch = [pending(cmd) for cmd in measured[i:i + args.batch]]
        batcher.commit_batch(batch)
        failed += sum(p.error is not None for p in batch)
    if profiler:
        profiler.disable()
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    n = len(measured)
    print(f"{n} messages in batches of {args.batch}: {cpu / n * 1e6:.0f} µs CPU, {wall / n * 1e6:.0f} µs wall, "
          f"{statements / n:.1f} statements per message; {failed} refused")
    if profiler:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(50)


if __name__ == "__main__":
    raise SystemExit(main())
