"""Line charts as SVG drawn on the server, for the web UI.

Drawing on the server keeps the pages free of a JavaScript charting library and a build step:
a page shows `<img src="/ui/charts/loss.svg">` and reloads it. The SVG is self-contained and
scales with its container (viewBox, no fixed size), so it works on a phone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

__all__ = ["Series", "line_chart", "nice_ticks"]

_FONT = "DejaVu Sans, Verdana, Arial, Helvetica, sans-serif"
PALETTE = ["#2f6bd8", "#d8392f", "#2e9e4f", "#8a4fd8", "#d88a2f"]


@dataclass
class Series:
    label: str
    points: Sequence[tuple[float, float]]
    color: str = ""


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About `count` round tick values from <= lo to >= hi (1, 2 or 5 times a power of ten);
    whole numbers only when `integer` (checkpoint numbers)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    if integer:
        step = max(1, round(step))
    ticks = [math.floor(lo / step) * step]
    while ticks[-1] < hi - 1e-9 * step:
        ticks.append(round(ticks[-1] + step, 12))
    return ticks


def _fmt(v: float) -> str:
    if v != 0 and (abs(v) >= 10_000 or abs(v) < 0.01):
        return f"{v:.0e}" if abs(v) < 0.01 else f"{v / 1000:.0f}k"
    return f"{v:.2f}".rstrip("0").rstrip(".")


def line_chart(series: Sequence[Series], *, title: str = "", x_label: str = "",
               y_label: str = "", width: int = 640, height: int = 300) -> str:
    """An SVG line chart of the series; points need not be sorted; empty series are skipped."""
    series = [s for s in series if s.points]
    left, right, top, bottom = 56, 12, 30 if title else 12, 40
    pw, ph = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
           f'font-family="{_FONT}" font-size="12" role="img" aria-label="{escape(title)}">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>']
    if title:
        out.append(f'<text x="{left}" y="18" font-size="14" font-weight="bold">'
                   f'{escape(title)}</text>')
    if not series:
        out.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" fill="#888">'
                   f'no data yet</text></svg>')
        return "".join(out)
    xs = [p[0] for s in series for p in s.points]
    ys = [p[1] for s in series for p in s.points if math.isfinite(p[1])]
    xt = nice_ticks(min(xs), max(xs), integer=all(float(x).is_integer() for x in xs))
    yt = nice_ticks(min(ys, default=0.0), max(ys, default=1.0))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def sx(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1) * pw

    def sy(y: float) -> float:
        return top + ph - (y - y0) / ((y1 - y0) or 1) * ph

    for t in yt:
        out.append(f'<line x1="{left}" x2="{left + pw}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
                   f'stroke="#e4e4e4"/><text x="{left - 6}" y="{sy(t) + 4:.1f}" '
                   f'text-anchor="end" fill="#555">{_fmt(t)}</text>')
    for t in xt:
        out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle" '
                   f'fill="#555">{_fmt(t)}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    if x_label:
        out.append(f'<text x="{left + pw / 2}" y="{height - 6}" text-anchor="middle" '
                   f'fill="#333">{escape(x_label)}</text>')
    if y_label:
        out.append(f'<text transform="translate(14 {top + ph / 2}) rotate(-90)" '
                   f'text-anchor="middle" fill="#333">{escape(y_label)}</text>')
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        pts = sorted((x, y) for x, y in s.points if math.isfinite(y))
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        out.append(f'<polyline class="series" points="{path}" fill="none" stroke="{color}" '
                   f'stroke-width="2"/>')
        if len(pts) <= 60:
            out += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.5" fill="{color}"/>'
                    for x, y in pts]
        lx = left + 8 + 150 * i
        out.append(f'<rect x="{lx}" y="{top + 6}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{lx + 14}" y="{top + 15}" fill="#333">{escape(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)
