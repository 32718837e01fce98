"""docs/console.md shows every screen the screenshot script takes, and each picture exists."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_screenshot_is_in_the_docs_and_on_disk() -> None:
    spec = importlib.util.spec_from_file_location("console_screenshots", REPO / "scripts" / "console_screenshots.py")
    assert spec and spec.loader
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    docs = (REPO / "docs" / "console.md").read_text(encoding="utf-8")
    names = [name for name, *_ in script.SCREENS]
    assert names
    for name in names:
        assert f"(console/{name})" in docs, name
        assert (REPO / "docs" / "console" / name).stat().st_size > 5000, name
