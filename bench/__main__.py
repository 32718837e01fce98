"""Run the benchmark: `python -m bench` (SQLite), `python -m bench --postgres` (PostgreSQL).

Every scenario runs against its ceiling in the same run; the table is printed and the results
are written to bench/results/latest.json. See docs/performance.md for what each figure means.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import datasets as ds
from .load import find_wrk
from .procs import postgres_url, rerun_under_postgres
from .report import Report
from .scenarios import SCENARIOS, Run, Settings

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgres", action="store_true",
                        help="run on PostgreSQL: DATABASE_URL or OPTFLOW_TEST_POSTGRES_URL, else a throwaway "
                             "server started with scripts/with-postgres.sh")
    parser.add_argument("--only", default=",".join(SCENARIOS),
                        help=f"comma-separated scenarios to run (default: all of {', '.join(SCENARIOS)})")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per inbound run (default 10)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--dispatch", type=int, default=ds.DISPATCH.due_enrollments,
                        help="enrolments due at once in the dispatch scenario (default 100,000)")
    parser.add_argument("--quick", action="store_true",
                        help="small datasets and short runs: checks that everything works, in about a minute; "
                             "its figures are not the benchmark's")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json", help="where to write the JSON")
    parser.add_argument("--python-load", action="store_true", help="use the Python load generator even if wrk is here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    pg = postgres_url(args.postgres)
    if args.postgres and pg is None:
        return rerun_under_postgres("bench", argv)
    dispatch = ds.DISPATCH if args.dispatch == ds.DISPATCH.due_enrollments else \
        ds.Dataset(f"dispatch-{args.dispatch}", args.dispatch, args.dispatch, due_enrollments=args.dispatch)
    settings = Settings(duration=args.duration, connections=args.connections, dispatch=dispatch)
    if args.quick:
        settings = Settings(duration=3.0, warmup=1.0, connections=args.connections,
                            small=ds.Dataset("10k", 10_000, 100_000),
                            large=ds.Dataset("quick-100k", 100_000, 200_000),
                            dispatch=ds.Dataset("quick-dispatch", 5_000, 5_000, due_enrollments=5_000))
    chosen = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    wrk = None if args.python_load else find_wrk()
    if wrk is None:
        print("wrk is not available: using the Python load generator (slower; the ceiling may be limited by it)",
              file=sys.stderr)
    ds.CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=ds.CACHE_DIR))
    report = Report(database="postgresql" if pg else "sqlite")
    report.details["settings"] = {"duration_s": settings.duration, "warmup_s": settings.warmup,
                                  "connections": settings.connections, "workers": settings.workers,
                                  "load_generator": "wrk" if wrk else "python", "quick": args.quick,
                                  "datasets": [ds.describe(d) for d in (settings.small, settings.large,
                                                                        settings.dispatch)]}
    run = Run(report, settings, work, wrk, postgres_url=pg, log=lambda line: print(line, flush=True))
    started = time.perf_counter()
    failed = []
    try:
        for name in chosen:
            try:
                SCENARIOS[name](run)
            except Exception:
                failed.append(name)
                traceback.print_exc()
                print(f"scenario {name} failed; logs in {work}", file=sys.stderr)
    finally:
        report.details["seconds"] = round(time.perf_counter() - started, 1)
        report.details["failed"] = failed
        report.write(args.output)
        if not failed:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"optflow benchmark on {report.database}, {settings.workers} workers, {settings.connections} connections, "
          f"load by {'wrk' if wrk else 'python'}; {report.details['seconds']:.0f} s")
    print(report.table())
    print(f"\nresults: {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
