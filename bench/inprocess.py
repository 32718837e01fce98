"""In-process cost of the inbound pipeline: CPU time and SQL statements per message, without HTTP.

    python -m bench.inprocess                 # 10k dataset, 3,000 messages in group commits of 32
    python -m bench.inprocess --profile       # the same under cProfile (top functions by own time)

Runs the same traffic as the inbound scenario (bench/load.py's mix) as a web worker's group
commit does, on a fresh copy of the cached 10k SQLite database: `MessageBus.prerender` (what is
worked out before the write lock, reported apart) and then `MessageBus.handle_batch` (the
transaction, measured). On SQLite the transaction is the part of a message that is serialised
between web workers, so it bounds throughput.
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
    parser.add_argument("--seed", type=int, default=7, help="the measured traffic's seed (the warm-up's is 1)")
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


def measure(system: System, args: argparse.Namespace) -> None:
    statements = 0

    counting = False

    def count(*_: object) -> None:
        nonlocal statements
        statements += counting

    # Counted by the driver: statements run through `Prepared` bypass SQLAlchemy's events.
    event.listen(system.engine, "connect", lambda dbapi, _: dbapi.set_trace_callback(count))
    system.engine.dispose()
    warmup, measured = commands(300, seed=1), commands(args.messages, seed=args.seed)
    system.bus.handle_batch(warmup, prerendered=system.bus.prerender(warmup))
    statements = 0
    profiler = cProfile.Profile() if args.profile else None
    cpu = wall = ahead_cpu = 0.0
    failed = 0
    for i in range(0, len(measured), args.batch):
        batch = measured[i:i + args.batch]
        started_cpu = time.process_time()
        ahead = system.bus.prerender(batch)  # as a web worker does, before it waits for the write lock
        ahead_cpu += time.process_time() - started_cpu
        if profiler:
            profiler.enable()
        counting, started_cpu, started = True, time.process_time(), time.perf_counter()
        handled = system.bus.handle_batch(batch, prerendered=ahead)
        counting, cpu, wall = False, cpu + time.process_time() - started_cpu, wall + time.perf_counter() - started
        if profiler:
            profiler.disable()
        failed += sum(done.error is not None for done in handled)
    n = len(measured)
    print(f"{n} messages in batches of {args.batch}: {cpu / n * 1e6:.0f} µs CPU, {wall / n * 1e6:.0f} µs wall, "
          f"{statements / n:.1f} statements per message in the transaction; {ahead_cpu / n * 1e6:.0f} µs CPU "
          f"ahead of it; {failed} refused")
    if profiler:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(50)


if __name__ == "__main__":
    raise SystemExit(main())
