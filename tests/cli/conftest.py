"""The command line run in-process (click's runner) on a temporary SQLite file."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from optflow.entrypoints.cli import main

Cli = Callable[..., Result]


@pytest.fixture
def cli_on(tmp_path: Path) -> Callable[[Path], Cli]:
    """`cli_on(flows_dir)("contacts", "add", ...)` runs `optflow ARGS` on `tmp_path/cli.db` with the
    flows of `flows_dir`; exceptions are not caught, so a crash fails the test with its traceback."""

    def with_flows(flows_dir: Path) -> Cli:
        runner = CliRunner()
        env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "OPTFLOW_FLOWS_DIR": str(flows_dir)}

        def invoke(*args: str) -> Result:
            return runner.invoke(main, list(args), env=env, catch_exceptions=False)

        return invoke

    return with_flows
