"""The classifier against the project's labelled corpus of inbound messages (tests/corpus/).

The corpus holds replies in English, Spanish, French and Portuguese, each row with its public
source (provider keyword lists, open-source projects' tests and issue threads, the FCC's order),
or marked as the project's own wording or variant of one. The test scores the default table and
fails when it recognises fewer than 99% of the opt-outs, or takes more than 1% of the other
messages for opt-outs, overall or in any language.

`python tests/unit/test_corpus.py` prints the scores per language and every miss, as Markdown, for
docs/keywords.md.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from optflow.domain.keywords import KeywordTable, classify
from optflow.domain.model import Intent

CORPUS = Path(__file__).resolve().parent.parent / "corpus" / "inbound_messages.csv"
LANGUAGES = ("en", "es", "fr", "pt")
MIN_RECALL = 0.99
MAX_FALSE_OPT_OUTS = 0.01


@dataclass(frozen=True)
class Row:
    text: str
    language: str
    label: Intent
    source: str


def corpus_rows(path: Path = CORPUS) -> list[Row]:
    with path.open(encoding="utf-8", newline="") as handle:
        return [Row(r["text"], r["language"], Intent(r["label"]), r["source"]) for r in csv.DictReader(handle)]


@dataclass
class Score:
    """Opt-out recall and false opt-outs over some rows, with the misses for the docs."""

    opt_outs: int = 0
    recognised: int = 0
    others: int = 0
    false_opt_outs: int = 0
    intent_right: int = 0
    rows: int = 0
    missed: list[Row] = field(default_factory=list)
    wrongly_opted_out: list[Row] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return self.recognised / self.opt_outs if self.opt_outs else 1.0

    @property
    def false_opt_out_rate(self) -> float:
        return self.false_opt_outs / self.others if self.others else 0.0


def score(rows: Iterable[Row], table: KeywordTable | None = None) -> Score:
    result = Score()
    for row in rows:
        intent = classify(row.text, table).intent
        result.rows += 1
        result.intent_right += intent is row.label
        if row.label is Intent.OPT_OUT:
            result.opt_outs += 1
            if intent is Intent.OPT_OUT:
                result.recognised += 1
            else:
                result.missed.append(row)
        else:
            result.others += 1
            if intent is Intent.OPT_OUT:
                result.false_opt_outs += 1
                result.wrongly_opted_out.append(row)
    return result


ROWS = corpus_rows()


def test_the_corpus_is_large_labelled_and_sourced() -> None:
    assert len(ROWS) >= 600
    assert {row.language for row in ROWS} == set(LANGUAGES)
    for language in LANGUAGES:
        labels = {row.label for row in ROWS if row.language == language}
        assert labels == set(Intent), f"{language} lacks {set(Intent) - labels}"
    assert all(row.text.strip() and row.source.strip() for row in ROWS)


@pytest.mark.parametrize("language", [*LANGUAGES, "all"])
def test_the_classifier_recognises_the_opt_outs_and_leaves_the_rest(language: str) -> None:
    rows = [row for row in ROWS if language in ("all", row.language)]
    result = score(rows)
    missed = [row.text for row in result.missed]
    wrong = [row.text for row in result.wrongly_opted_out]
    assert result.recall >= MIN_RECALL, f"{language}: opt-out recall {result.recall:.1%}; missed {missed}"
    assert result.false_opt_out_rate <= MAX_FALSE_OPT_OUTS, (
        f"{language}: {result.false_opt_out_rate:.1%} of non-opt-outs taken for opt-outs: {wrong}"
    )


def summary(rows: list[Row]) -> str:
    """The scores per language and overall, and what is still missed, as Markdown."""
    lines = [
        "| language | messages | opt-outs | recognised | recall | other messages | taken for opt-outs | intent right |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    scores = {language: score(r for r in rows if r.language == language) for language in LANGUAGES}
    scores["all"] = score(rows)
    for language, s in scores.items():
        lines.append(
            f"| {language} | {s.rows} | {s.opt_outs} | {s.recognised} | {s.recall:.1%} | {s.others} | "
            f"{s.false_opt_outs} ({s.false_opt_out_rate:.1%}) | {s.intent_right / s.rows:.1%} |"
        )
    lines.append("")
    for title, found in (("Opt-outs still missed", scores["all"].missed),
                         ("Other messages taken for opt-outs", scores["all"].wrongly_opted_out)):
        lines.append(f"{title}:" if found else f"{title}: none.")
        lines.extend(f"- ({row.language}) {row.text!r}" for row in found)
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(ROWS))
