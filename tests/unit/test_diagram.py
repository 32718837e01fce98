"""docs/consent-machine.md embeds the Mermaid diagram generated from the machine's one definition."""

from __future__ import annotations

from pathlib import Path

from optflow.domain.machine import TRANSITIONS, mermaid_diagram
from optflow.domain.model import State, Trigger

DOC = Path(__file__).resolve().parents[2] / "docs" / "consent-machine.md"


def test_committed_diagram_matches_the_machine() -> None:
    text = DOC.read_text(encoding="utf-8")
    assert "```mermaid\n" + mermaid_diagram() + "```" in text, (
        "docs/consent-machine.md is out of date: run `optflow diagram` and paste it into the mermaid block")


def test_diagram_has_a_line_for_every_transition_source() -> None:
    diagram = mermaid_diagram()
    for trigger in Trigger:
        assert f": {trigger.value}" in diagram
    for state in State:
        assert f"{state.value} --> opted_out: opt_out" in diagram
    assert len(TRANSITIONS) == 11
