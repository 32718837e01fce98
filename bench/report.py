"""Figures, each beside the ceiling measured in the same run, printed as a table and saved as JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One measured figure and its ceiling. `ratio` is always "how close to the ceiling": value /
    ceiling when more is better (throughput), ceiling / value when less is better (time, latency,
    memory), so 1.0 means as good as the ceiling whatever the unit. Flatness figures (the same
    thing at 1M and at 10k contacts) use the 10k run as their ceiling."""

    scenario: str
    name: str
    value: float
    unit: str
    ceiling: float
    ceiling_label: str
    higher_is_better: bool
    target: str = ""
    target_met: bool | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        if self.value <= 0 or self.ceiling <= 0:
            return 0.0
        return self.value / self.ceiling if self.higher_is_better else self.ceiling / self.value

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


@dataclass
class Report:
    database: str
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def table(self) -> str:
        header = ("scenario", "figure", "value", "ceiling (same run)", "ratio", "target", "met")
        rows = [header]
        for f in self.figures:
            met = "" if f.target_met is None else ("yes" if f.target_met else "NO")
            ceiling = f"{_number(f.ceiling, f.unit)} {f.ceiling_label}"
            rows.append((f.scenario, f.name, _number(f.value, f.unit), ceiling, f"{f.ratio:.2f}", f.target, met))
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(header))]
        lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "started": self.started.isoformat(timespec="seconds"),
            "finished": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": self.database,
            "machine": machine(),
            "figures": [f.as_dict() for f in self.figures],
            "details": self.details,
        }
        path.write_text(json.dumps(document, indent=2, default=str) + "\n", encoding="utf-8")


def _number(value: float, unit: str) -> str:
    if unit in ("msg/s", "req/s", "rows/s"):
        return f"{value:,.0f} {unit}"
    if unit == "MB":
        return f"{value:,.1f} MB"
    if unit in ("ms", "s"):
        return f"{value:,.2f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:,.3g} {unit}"


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = 0.0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = int(line.split()[1]) / 1024 / 1024
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gb": round(memory_gb, 1), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}", "sqlite": _sqlite_version(), "git": _git_head()}


def _sqlite_version() -> str:
    import sqlite3

    return sqlite3.sqlite_version


def _git_head() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parent, check=False).stdout.strip()
    except OSError:
        return ""
