"""The classifier scenario: what classifying one inbound message costs, now and before issue 13.

Every message of the labelled corpus (tests/corpus/inbound_messages.csv) is classified with the
default table, each timed on its own (the best of a few repeats of a few dozen calls, so a busy
core shows as noise, not as cost); the figure is the median over the messages. Its ceiling, in the
same run and the same way, is the classifier as it was before issue 13 (keywords and a few phrases,
no grammar, negatives or typo correction), loaded from the repository's history rather than kept
twice.
"""

from __future__ import annotations

import csv
import functools
import statistics
import subprocess
import sys
import timeit
import types
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from optflow.domain.keywords import KeywordTable

from .report import Figure

if TYPE_CHECKING:
    from .scenarios import Run

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO / "tests" / "corpus" / "inbound_messages.csv"
BEFORE_REVISION = "7861785"  # the last commit before issue 13's classifier
TARGET_MEDIAN_US = 50.0


def corpus_texts() -> list[str]:
    with CORPUS.open(encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def per_message_us(classify: Callable[[str], object], texts: list[str], number: int, repeat: int) -> list[float]:
    """Microseconds per call for each text: the best of `repeat` runs of `number` calls."""
    for text in texts:  # warm caches (the table is built on first use)
        classify(text)
    return [min(timeit.repeat(functools.partial(classify, text), number=number, repeat=repeat)) / number * 1e6
            for text in texts]


def classifier_before() -> Callable[[str], object]:
    """The default table's `classify` as it was at `BEFORE_REVISION`, from git's history (the old
    module, run against today's domain modules, which it imports by the same names)."""
    try:
        source = subprocess.run(["git", "show", f"{BEFORE_REVISION}:src/optflow/domain/keywords.py"], cwd=REPO,
                                check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"the classifier scenario needs the repository's history ({BEFORE_REVISION}): "
                           f"run it from a full git clone ({exc})") from None
    module = types.ModuleType("optflow.domain.keywords_before_issue_13")
    module.__package__ = "optflow.domain"
    sys.modules[module.__name__] = module  # its dataclasses look their module up
    exec(compile(source, f"{BEFORE_REVISION}:src/optflow/domain/keywords.py", "exec"), module.__dict__)
    classify: Callable[[str], object] = module.KeywordTable.default().classify
    return classify


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {"median_us": statistics.median(ordered), "mean_us": statistics.fmean(ordered),
            "p95_us": ordered[int(len(ordered) * 0.95)], "max_us": ordered[-1]}


def classifier(run: Run) -> None:
    texts = corpus_texts()
    number, repeat = (10, 2) if run.settings.duration < 10 else (50, 5)
    run.log(f"classifier: {len(texts)} corpus messages, best of {repeat} x {number} calls each")
    now = summary(per_message_us(KeywordTable.default().classify, texts, number, repeat))
    before = summary(per_message_us(classifier_before(), texts, number, repeat))
    run.log(f"  now: median {now['median_us']:.1f} µs, p95 {now['p95_us']:.1f} µs, max {now['max_us']:.0f} µs; "
            f"before issue 13: median {before['median_us']:.1f} µs, p95 {before['p95_us']:.1f} µs")
    run.report.details["classifier"] = {"messages": len(texts), "calls_per_timing": number, "repeats": repeat,
                                        "now": now, "before_issue_13": before}
    run.report.add(Figure("classifier", "classify one corpus message (median)", now["median_us"], "µs",
                          before["median_us"], "classifier before issue 13", False,
                          f"<= {TARGET_MEDIAN_US:.0f} µs median", now["median_us"] <= TARGET_MEDIAN_US))
