"""Server-side SVG line charts for the console's reports: no script, readable without one.

`line_chart` returns the markup of an `<svg role="img">` with a `<title>` and a `<desc>` that
say in words what it shows (screen readers read those; the page also shows the numbers as a
table). Each series has its own colour (at least 3:1 against white, WCAG 1.4.11), its own dash
pattern and marker shape, so no series is told apart by colour alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

WIDTH, HEIGHT = 720, 300
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 40
# colour, dash pattern, marker: one per series, in order
STYLES = (("#1f5fbf", "", "circle"), ("#b3261e", "6 3", "square"), ("#1b7a3a", "2 3", "diamond"),
          ("#6b3fa0", "10 3 2 3", "triangle"))


def _ticks(top: int) -> list[int]:
    """Round values from 0 to at least `top`, at most five steps: 1, 2 or 5 times a power of ten apart."""
    magnitude = 10 ** max(0, len(str(max(top // 4, 1))) - 1)
    step = next(m * magnitude for m in (1, 2, 5, 10) if top <= 4 * m * magnitude)
    return list(range(0, -(-top // step) * step + 1, step))


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{colour}"/>'
    if shape == "square":
        return f'<rect x="{x - 3.5:.1f}" y="{y - 3.5:.1f}" width="7" height="7" fill="{colour}"/>'
    if shape == "diamond":
        return (f'<polygon points="{x:.1f},{y - 4.5:.1f} {x + 4.5:.1f},{y:.1f} {x:.1f},{y + 4.5:.1f} '
                f'{x - 4.5:.1f},{y:.1f}" fill="{colour}"/>')
    return (f'<polygon points="{x:.1f},{y - 4.5:.1f} {x + 4.5:.1f},{y + 3.5:.1f} {x - 4.5:.1f},{y + 3.5:.1f}" '
            f'fill="{colour}"/>')


def line_chart(title: str, labels: Sequence[str], series: Mapping[str, Sequence[int]], *, chart_id: str) -> str:
    """A line chart of `series` (name -> one value per label). `chart_id` makes the ids of its
    title and description unique on the page."""
    if any(len(values) != len(labels) for values in series.values()):
        raise ValueError("every series needs one value per label")
    if len(series) > len(STYLES):
        raise ValueError(f"at most {len(STYLES)} series")
    top = max((max(values, default=0) for values in series.values()), default=0)
    ticks = _ticks(max(top, 1))
    high = ticks[-1]
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (len(labels) - 1) if len(labels) > 1 else plot_w / 2)

    def y(value: int) -> float:
        return TOP + plot_h - plot_h * value / high

    totals = ", ".join(f"{name}: {sum(values)}" for name, values in series.items())
    span = f"from {labels[0]} to {labels[-1]}" if labels else "for no period"
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="{chart_id}-title {chart_id}-desc" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="{chart_id}-title">{escape(title)}</title>',
             f'<desc id="{chart_id}-desc">{escape(f"Counts {span}. Totals: {totals}.")}</desc>']
    for tick in ticks:
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'stroke="#d0d0d0" stroke-width="1"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" font-size="12" '
                     f'fill="#333">{tick}</text>')
    every = max(1, len(labels) // 6)
    for i, label in enumerate(labels):
        if i % every == 0 or i == len(labels) - 1:
            anchor = "end" if i == len(labels) - 1 and len(labels) > 1 else "start" if i == 0 else "middle"
            parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="{anchor}" font-size="12" '
                         f'fill="#333">{escape(label)}</text>')
    for (name, values), (colour, dash, shape) in zip(series.items(), STYLES, strict=False):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(f'<g class="series"><title>{escape(name)}</title>'
                     f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"{dashes}/>')
        parts.extend(_marker(shape, x(i), y(v), colour) for i, v in enumerate(values))
        parts.append("</g>")
    parts.append("</svg>")
    return "".join(parts)


def legend(names: Sequence[str]) -> list[tuple[str, str, str, str]]:
    """(name, colour, dash pattern, marker) of each series, for the legend beside the chart."""
    return [(name, *style) for name, style in zip(names, STYLES, strict=False)]
