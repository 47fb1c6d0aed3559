"""Small inline-SVG charts drawn in Python: no JS, no fonts or files to fetch, every text escaped.

A chart is a :class:`Frame` (the plot area and its scales) plus layers drawn into it — :func:`axes`,
:func:`polyline`, :func:`points`, :func:`hline`, :func:`legend` — joined by :func:`svg`. :func:`line_chart` puts
them together for any number of :class:`Series`, so one run's trajectory and several runs' curves on one plot
(``promptopt compare``) are the same call with different series. Every marker carries the CSS class ``point``
(and the series' ``css``), so a browser check can count what was drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape
from typing import Literal

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#7f7f7f")
"""Series colours, in order (distinct for up to nine runs on one plot)."""

Point = tuple[float, float]


@dataclass(frozen=True)
class Series:
    """One curve: its points (x, y), how they are drawn, and a tooltip per point (``labels``, escaped)."""

    name: str
    points: Sequence[Point]
    color: str = PALETTE[0]
    line: Literal["none", "straight", "step"] = "straight"
    markers: Literal["none", "filled", "hollow"] = "filled"
    labels: Sequence[str] = ()
    css: str = ""
    dash: str | None = None


@dataclass(frozen=True)
class Frame:
    """The chart's size and the data ranges its axes span; maps data to pixels."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    width: int = 720
    height: int = 360
    left: int = 56
    right: int = 16
    top: int = 16
    bottom: int = 44

    def x(self, v: float) -> float:
        lo, hi = self.x_range
        return self.left + (v - lo) / ((hi - lo) or 1.0) * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        lo, hi = self.y_range
        return self.height - self.bottom - (v - lo) / ((hi - lo) or 1.0) * (self.height - self.top - self.bottom)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _num(v: float) -> str:
    return f"{v:.1f}"


def _tick_text(v: float) -> str:
    return f"{v:g}" if abs(v) >= 1e-9 else "0"


def axes(frame: Frame, *, x_label: str, y_label: str) -> str:
    """Axis lines, grid, tick labels and axis titles."""
    x0, x1 = frame.left, frame.width - frame.right
    y0, y1 = frame.height - frame.bottom, frame.top
    out = ['<g class="axes" font-size="11" fill="#444">']
    for t in nice_ticks(*frame.y_range):
        y = _num(frame.y(t))
        out.append(f'<line x1="{x0}" x2="{x1}" y1="{y}" y2="{y}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{x0 - 6}" y="{y}" text-anchor="end" dominant-baseline="middle">{_tick_text(t)}</text>')
    for t in nice_ticks(*frame.x_range):
        x = _num(frame.x(t))
        out.append(f'<line x1="{x}" x2="{x}" y1="{y0}" y2="{y0 + 4}" stroke="#444"/>')
        out.append(f'<text x="{x}" y="{y0 + 16}" text-anchor="middle">{_tick_text(t)}</text>')
    out.append(f'<line x1="{x0}" x2="{x1}" y1="{y0}" y2="{y0}" stroke="#444"/>')
    out.append(f'<line x1="{x0}" x2="{x0}" y1="{y0}" y2="{y1}" stroke="#444"/>')
    out.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{frame.height - 6}" text-anchor="middle">{escape(x_label)}</text>')
    mid = (y0 + y1) / 2
    out.append(
        f'<text x="14" y="{mid:.1f}" text-anchor="middle" transform="rotate(-90 14 {mid:.1f})">{escape(y_label)}</text>'
    )
    out.append("</g>")
    return "".join(out)


def polyline(frame: Frame, series: Series) -> str:
    """The series' line (straight segments, or a step line that holds each value until the next x)."""
    pts = list(series.points)
    if series.line == "none" or not pts:
        return ""
    if series.line == "step":
        stepped: list[Point] = []
        for i, (x, y) in enumerate(pts):
            if i:
                stepped.append((x, pts[i - 1][1]))
            stepped.append((x, y))
        pts = stepped
    coords = " ".join(f"{_num(frame.x(x))},{_num(frame.y(y))}" for x, y in pts)
    dash = f' stroke-dasharray="{escape(series.dash)}"' if series.dash else ""
    return (
        f'<polyline class="line {escape(series.css)}" points="{coords}" fill="none" stroke="{escape(series.color)}" '
        f'stroke-width="2"{dash}/>'
    )


def points(frame: Frame, series: Series) -> str:
    """One marker per point, each with its tooltip."""
    if series.markers == "none":
        return ""
    fill = escape(series.color) if series.markers == "filled" else "#fff"
    out = []
    for i, (x, y) in enumerate(series.points):
        tip = series.labels[i] if i < len(series.labels) else f"{series.name}: ({x:g}, {y:.3f})"
        out.append(
            f'<circle class="point {escape(series.css)}" cx="{_num(frame.x(x))}" cy="{_num(frame.y(y))}" r="4" '
            f'fill="{fill}" stroke="{escape(series.color)}" stroke-width="1.5"><title>{escape(tip)}</title></circle>'
        )
    return "".join(out)


def hline(frame: Frame, y: float, *, color: str, dash: str = "6 4", css: str = "") -> str:
    """A horizontal reference line across the plot area (e.g. the seed prompt's score)."""
    yy = _num(frame.y(y))
    return (
        f'<line class="ref {escape(css)}" x1="{frame.left}" x2="{frame.width - frame.right}" y1="{yy}" y2="{yy}" '
        f'stroke="{escape(color)}" stroke-dasharray="{escape(dash)}" stroke-width="1.5"/>'
    )


def legend(frame: Frame, entries: Sequence[tuple[str, str, str]]) -> str:
    """Legend entries (name, colour, kind: ``line``, ``dash``, ``filled`` or ``hollow``), in the right margin."""
    out = ['<g class="legend" font-size="11">']
    x = frame.width - frame.right + 12
    for i, (name, color, kind) in enumerate(entries):
        y = frame.top + 10 + 16 * i
        c = escape(color)
        if kind in ("filled", "hollow"):
            fill = c if kind == "filled" else "#fff"
            out.append(f'<circle cx="{x + 10}" cy="{y}" r="4" fill="{fill}" stroke="{c}" stroke-width="1.5"/>')
        else:
            dash = ' stroke-dasharray="6 4"' if kind == "dash" else ""
            out.append(f'<line x1="{x}" x2="{x + 20}" y1="{y}" y2="{y}" stroke="{c}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x + 26}" y="{y}" dominant-baseline="middle" fill="#222">{escape(name)}</text>')
    out.append("</g>")
    return "".join(out)


def svg(frame: Frame, body: Sequence[str], *, chart_id: str, title: str) -> str:
    """The ``<svg>`` element (``data-chart`` = ``chart_id``, for checks) holding the drawn layers. Inline in HTML, so
    no ``xmlns``: the page holds no URL at all."""
    return (
        f'<svg class="chart" data-chart="{escape(chart_id)}" role="img" '
        f'width="{frame.width}" height="{frame.height}" viewBox="0 0 {frame.width} {frame.height}">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def data_range(values: Sequence[float], *, pad: float = 0.05, floor: float | None = None) -> tuple[float, float]:
    """[min, max] of the finite ``values``, padded; ``floor`` is a lower end it never goes below."""
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return (0.0, 1.0)
    lo, hi = min(finite), max(finite)
    span = (hi - lo) or max(abs(hi), 1.0)
    lo, hi = lo - pad * span, hi + pad * span
    return (max(lo, floor) if floor is not None else lo, hi)


def line_chart(
    series: Sequence[Series],
    *,
    chart_id: str,
    title: str,
    x_label: str,
    y_label: str,
    refs: Sequence[tuple[str, float, str]] = (),
    y_range: tuple[float, float] | None = None,
) -> str:
    """Any number of series on one plot, with horizontal reference lines ``refs`` (name, y, colour) and a legend."""
    xs = [x for s in series for x, _ in s.points]
    ys = [y for s in series for _, y in s.points] + [y for _, y, _ in refs]
    widest = max([len(s.name) for s in series] + [len(name) for name, _, _ in refs] + [10])
    frame = Frame(
        x_range=data_range(xs, pad=0.02, floor=0.0),
        y_range=y_range or data_range(ys),
        width=760 + 7 * widest,
        right=40 + 7 * widest,
    )
    body = [axes(frame, x_label=x_label, y_label=y_label)]
    body += [hline(frame, y, color=c, css="seed") for _, y, c in refs if math.isfinite(y)]
    body += [polyline(frame, s) for s in series]
    body += [points(frame, s) for s in series]
    entries = [(name, c, "dash") for name, _, c in refs]
    for s in series:
        kind = s.markers if s.line == "none" and s.markers != "none" else ("dash" if s.dash else "line")
        entries.append((s.name, s.color, kind))
    body.append(legend(frame, entries))
    return svg(frame, body, chart_id=chart_id, title=title)


def interval_chart(
    rows: Sequence[tuple[str, float, float, float]], *, chart_id: str, title: str, colors: Sequence[str] = ()
) -> str:
    """One horizontal row per (name, mean, ci_low, ci_high): a point with its confidence interval, on a 0–1 scale
    widened to the data; row i in ``colors[i]`` (default the palette in order)."""
    lo, hi = data_range([v for _, m, a, b in rows for v in (m, a, b)] + [0.0, 1.0], pad=0.0)
    frame = Frame(
        x_range=(lo, hi), y_range=(0.5, len(rows) + 0.5), height=36 + 36 * len(rows), left=140, top=4, bottom=32
    )
    body = ['<g class="axes" font-size="11" fill="#444">']
    y_axis = frame.height - frame.bottom
    for t in nice_ticks(lo, hi):
        x = _num(frame.x(t))
        body.append(f'<line x1="{x}" x2="{x}" y1="{frame.top}" y2="{y_axis}" stroke="#e5e5e5"/>')
        body.append(f'<text x="{x}" y="{y_axis + 16}" text-anchor="middle">{_tick_text(t)}</text>')
    body.append("</g>")
    for i, (name, mean, a, b) in enumerate(rows):
        y = _num(frame.y(len(rows) - i))
        color = escape(colors[i] if i < len(colors) else PALETTE[i % len(PALETTE)])
        body.append(f'<text x="{frame.left - 8}" y="{y}" text-anchor="end" dominant-baseline="middle" font-size="12">')
        body.append(f"{escape(name)}</text>")
        body.append(
            f'<line class="ci" x1="{_num(frame.x(a))}" x2="{_num(frame.x(b))}" y1="{y}" y2="{y}" stroke="{color}" '
            'stroke-width="2"/>'
        )
        tip = f"{name}: {mean:.3f} [95% CI {a:.3f}–{b:.3f}]"
        body.append(
            f'<circle class="point" cx="{_num(frame.x(mean))}" cy="{y}" r="5" fill="{color}">'
            f"<title>{escape(tip)}</title></circle>"
        )
    return svg(frame, body, chart_id=chart_id, title=title)
