"""Small SVG line charts of per-page figures, for markdown metadata in the Dagster UI.

The UI renders markdown metadata with images from ``data:`` URLs, so a chart needs no
file, no server and no plotting library: ``markdown_image(line_chart(...))``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
from html import escape

PALETTE = ("#4F43DD", "#E08E00", "#0E9F6E", "#D6336C", "#5C7080")
WIDTH, HEIGHT = 900, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 34, 40


def _nice_top(value: float) -> float:
    """The smallest 1/2/5 x 10^k at or above ``value`` (a readable axis end)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def _number(value: float) -> str:
    return f"{value:.3g}" if value < 1000 else f"{value:,.0f}"


def line_chart(title: str, x_labels: Sequence[str], series: Mapping[str, Sequence[float | None]]) -> str:
    """An SVG document: one line per series over the x labels (None: no point)."""
    n = len(x_labels)
    values = [v for line in series.values() for v in line if v is not None]
    top = _nice_top(max(values, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (n - 1) if n > 1 else plot_w / 2)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - v / top)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             f'font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/>',
             f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>']
    for k in range(5):  # horizontal grid with its values
        v = top * k / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e1e4e8"/>'
                     f'<text x="{LEFT - 6}" y="{y(v) + 4:.1f}" text-anchor="end" fill="#5c7080">{_number(v)}</text>')
    for i in sorted({0, n // 2, n - 1}) if n else []:  # first, middle and last page
        parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                     f'fill="#5c7080">{escape(x_labels[i])}</text>')
    legend_x = LEFT + 220
    for color, (name, line) in zip(PALETTE * 4, series.items()):
        points = [(x(i), y(v)) for i, v in enumerate(line) if v is not None]
        if len(points) > 1:
            path = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for px, py in points if len(points) <= 60 else []:  # dots where they can be told apart
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{color}"/>')
        parts.append(f'<rect x="{legend_x}" y="7" width="10" height="10" fill="{color}"/>'
                     f'<text x="{legend_x + 14}" y="16">{escape(name)}</text>')
        legend_x += 24 + 7 * len(name)
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 6}" text-anchor="middle" fill="#5c7080">page</text>')
    parts.append("</svg>")
    return "".join(parts)


def markdown_image(svg: str, alt: str) -> str:
    """The SVG as a markdown image with a ``data:`` URL."""
    encoded = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f"![{alt}](data:image/svg+xml;base64,{encoded})"
