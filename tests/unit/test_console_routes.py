"""The console's routes: every page handler has its own name (Sanic names routes after their
functions; two alike refuse to start the server)."""

from __future__ import annotations

import pytest
from sanic import Blueprint

from optflow.entrypoints.console import VIEW_MODULES


def test_every_console_route_has_its_own_name() -> None:
    bp = Blueprint("probe")
    for module in VIEW_MODULES:
        module.register(bp)
    names = [future.name or future.handler.__name__ for future in bp._future_routes]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        pytest.fail(f"route names used twice: {duplicates}")
