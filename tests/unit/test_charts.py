"""The reports' SVG charts (`entrypoints/charts.py`): text alternatives and where the points go."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from optflow.entrypoints.charts import HEIGHT, TOP, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_the_chart_says_in_words_what_it_shows() -> None:
    markup = line_chart("Opt-ins <by day>", ["2026-11-23", "2026-11-24"], {"Opt-ins": [2, 0], "Opt-outs": [0, 1]},
                        chart_id="c1")
    svg = ET.fromstring(markup)  # well-formed, the title escaped
    assert svg.get("role") == "img" and svg.get("aria-labelledby") == "c1-title c1-desc"
    assert svg.find(f"{SVG}title").text == "Opt-ins <by day>"
    assert svg.find(f"{SVG}desc").text == "Counts from 2026-11-23 to 2026-11-24. Totals: Opt-ins: 2, Opt-outs: 1."
    names = [g.find(f"{SVG}title").text for g in svg.iter(f"{SVG}g")]
    assert names == ["Opt-ins", "Opt-outs"]


def test_the_highest_value_is_at_the_top_and_zero_at_the_bottom() -> None:
    markup = line_chart("t", ["a", "b", "c"], {"s": [0, 4, 2]}, chart_id="c")
    points = re.search(r'points="([^"]+)"', markup)[1].split()  # type: ignore[index]
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[1] == TOP and ys[0] == HEIGHT - 40 and ys[0] > ys[2] > ys[1]


def test_series_of_the_wrong_length_are_refused() -> None:
    with pytest.raises(ValueError, match="one value per label"):
        line_chart("t", ["a", "b"], {"s": [1]}, chart_id="c")
