"""Static SVG charts for the HTML report: drawn here, so the report needs no script to show them.

Why not Optuna's plotly figures: inlining plotly.js adds about 3.5 MB to every report, the charts
only appear once that script has run, and 10k trials become megabytes of JSON. These charts are
plain SVG: they render in any browser (and in a file viewer) with no script, offline, and cost
about 14 bytes per point: every point of a series is one ``M x y h0`` in a single path, drawn
as a dot by its round line cap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from attrs import frozen

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 12, 40
# A colour-blind-safe sequential palette (viridis, 8 steps) for values, worst to best.
PALETTE = ("#fde725", "#a0da39", "#4ac16d", "#1fa187", "#277f8e", "#365c8d", "#46327e", "#440154")
GREY = "#b8b8b8"
ACCENT = "#d62728"


@frozen
class Scale:
    """Maps data values to pixels along one axis, linearly or on a log scale."""

    low: float
    high: float
    start: float
    end: float
    log: bool = False
    labels: tuple[str, ...] = ()
    """For a categorical axis: the choices at 0, 1, 2, ..."""

    @classmethod
    def fit(cls, values: Sequence[float], start: float, end: float, *, log: bool = False) -> Scale:
        finite = [v for v in values if math.isfinite(v) and (v > 0 or not log)]
        if not finite:
            return cls(0.0, 1.0, start, end)
        low, high = min(finite), max(finite)
        if log:
            low, high = math.log10(low), math.log10(high)
        if low == high:
            low, high = low - 0.5, high + 0.5
        pad = (high - low) * 0.04
        return cls(low - pad, high + pad, start, end, log)

    def __call__(self, value: float) -> float:
        v = math.log10(value) if self.log else value
        return self.start + (v - self.low) / (self.high - self.low) * (self.end - self.start)

    def ticks(self) -> list[tuple[float, str]]:
        if self.labels:
            return [(float(i), label) for i, label in enumerate(self.labels)]
        if self.log:
            first, last = math.ceil(self.low), math.floor(self.high)
            step = max(1, math.ceil((last - first + 1) / 6))
            return [(10.0**e, f"1e{e}") for e in range(first, last + 1, step)]
        span = self.high - self.low
        raw = span / 5
        magnitude = 10 ** math.floor(math.log10(raw))
        step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
        first = math.ceil(self.low / step) * step
        count = int((self.high - first) / step) + 1
        return [(first + i * step, _number(first + i * step)) for i in range(count)]


def _number(value: float) -> str:
    if value == int(value) and abs(value) < 1e7:
        return str(int(value))  # trial numbers: 10000, not 1e+04
    return f"{value:.4g}"


def _fmt(pixel: float) -> str:
    return f"{pixel:.1f}".rstrip("0").rstrip(".")


def dots_path(points: Sequence[tuple[float, float]], color: str, size: float = 5) -> str:
    if not points:
        return ""
    d = "".join(f"M{_fmt(x)} {_fmt(y)}h0" for x, y in points)
    # Thousands of dots: smaller and see-through, so that density still shows.
    opacity = 1.0 if len(points) <= 1000 else 0.5
    size = size if len(points) <= 1000 else max(2.5, size * 0.6)
    return (
        f'<path class="dots" d="{d}" stroke="{color}" stroke-width="{size:g}" '
        f'stroke-opacity="{opacity:g}" stroke-linecap="round" fill="none"/>'
    )


def line_path(points: Sequence[tuple[float, float]], color: str, *, step: bool = False) -> str:
    if not points:
        return ""
    parts = [f"M{_fmt(points[0][0])} {_fmt(points[0][1])}"]
    for x1, y1 in points[1:]:
        parts.append(f"H{_fmt(x1)}V{_fmt(y1)}" if step else f"L{_fmt(x1)} {_fmt(y1)}")
    return (
        f'<path class="line" d="{"".join(parts)}" stroke="{color}" stroke-width="2" fill="none"/>'
    )


def frame(body: str, x: Scale, y: Scale, x_label: str, y_label: str, *, title: str = "") -> str:
    """An SVG element with both axes, their ticks and labels, around ``body``."""
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title or y_label)}">'
    ]
    x0, x1, y0, y1 = LEFT, WIDTH - RIGHT, HEIGHT - BOTTOM, TOP
    out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" class="plot-area"/>')
    for value, label in x.ticks():
        px = _fmt(x(value))
        out.append(f'<line class="grid" x1="{px}" x2="{px}" y1="{y1}" y2="{y0}"/>')
        out.append(
            f'<text class="tick" x="{px}" y="{y0 + 14}" text-anchor="middle">{escape(label)}</text>'
        )
    for value, label in y.ticks():
        py = _fmt(y(value))
        out.append(f'<line class="grid" x1="{x0}" x2="{x1}" y1="{py}" y2="{py}"/>')
        out.append(
            f'<text class="tick" x="{x0 - 4}" y="{py}" text-anchor="end" '
            f'dominant-baseline="middle">{escape(label)}</text>'
        )
    out.append(body)
    out.append(
        f'<text class="label" x="{(x0 + x1) / 2}" y="{HEIGHT - 6}" '
        f'text-anchor="middle">{escape(x_label)}</text>'
    )
    out.append(
        f'<text class="label" x="12" y="{(y0 + y1) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 12 {(y0 + y1) / 2})">{escape(y_label)}</text>'
    )
    out.append("</svg>")
    return "".join(out)


def x_scale(values: Sequence[float], *, log: bool = False, labels: Sequence[str] = ()) -> Scale:
    if labels:
        return Scale(-0.5, len(labels) - 0.5, LEFT, WIDTH - RIGHT, labels=tuple(labels))
    return Scale.fit(values, LEFT, WIDTH - RIGHT, log=log)


def y_scale(values: Sequence[float], *, log: bool = False) -> Scale:
    return Scale.fit(values, HEIGHT - BOTTOM, TOP, log=log)


def bars(items: Sequence[tuple[str, float]], value_label: str) -> str:
    """Horizontal bars, one per item, longest first as given; values from 0 to 1."""
    row, label_width = 22, 150
    height = TOP + row * len(items) + BOTTOM
    x = Scale(0.0, 1.0, label_width, WIDTH - RIGHT - 48)
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(value_label)}">'
    ]
    for index, (name, value) in enumerate(items):
        top = TOP + index * row
        width = max(x(value) - x(0.0), 1.0)
        out.append(
            f'<text class="tick" x="{label_width - 6}" y="{top + row / 2}" '
            f'text-anchor="end" dominant-baseline="middle">{escape(name)}</text>'
        )
        out.append(
            f'<rect class="bar" x="{label_width}" y="{top + 3}" width="{_fmt(width)}" '
            f'height="{row - 6}" fill="{PALETTE[5]}"/>'
        )
        out.append(
            f'<text class="tick" x="{_fmt(label_width + width + 4)}" y="{top + row / 2}" '
            f'dominant-baseline="middle">{value:.3f}</text>'
        )
    out.append(
        f'<text class="label" x="{(label_width + WIDTH - RIGHT) / 2}" y="{height - 8}" '
        f'text-anchor="middle">{escape(value_label)}</text></svg>'
    )
    return "".join(out)


def color_bins(values: Sequence[float], minimize: bool) -> list[int]:
    """Each value's palette index by rank, the best values darkest."""
    order = sorted(range(len(values)), key=lambda i: values[i], reverse=minimize)
    bins = [0] * len(values)
    for rank, index in enumerate(order):
        bins[index] = rank * len(PALETTE) // max(len(values), 1)
    return bins


def parallel(
    axes: Sequence[tuple[str, Scale]], rows: Sequence[Sequence[float | None]], bins: Sequence[int]
) -> str:
    """Parallel coordinates: one vertical axis per column, a polyline per row, coloured by bin.

    Each axis Scale maps to pixels from bottom to top; rows with a missing value (a conditional
    parameter) break their line there.
    """
    height = HEIGHT + 20
    left, right = 40, WIDTH - 40
    step = (right - left) / max(len(axes) - 1, 1)
    xs = [left + i * step for i in range(len(axes))]
    paths: list[list[str]] = [[] for _ in PALETTE]
    for row, bin_ in zip(rows, bins, strict=True):
        parts: list[str] = []
        pen = "M"
        for px, (_, scale), value in zip(xs, axes, row, strict=True):
            if value is None or not math.isfinite(value):
                pen = "M"
                continue
            parts.append(f"{pen}{_fmt(px)} {_fmt(scale(value))}")
            pen = "L"
        paths[bin_].append("".join(parts))
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        'xmlns="http://www.w3.org/2000/svg" aria-label="parallel coordinates">'
    ]
    # Thousands of lines: fainter each, so that where they bundle still shows.
    opacity = 0.5 if len(rows) <= 500 else max(0.08, 0.5 * 500 / len(rows) ** 0.5 / 22)
    for color, lines in zip(PALETTE, paths, strict=True):
        if lines:
            out.append(
                f'<path class="line" d="{"".join(lines)}" stroke="{color}" '
                f'stroke-width="1" stroke-opacity="{opacity:.2g}" fill="none"/>'
            )
    for px, (name, scale) in zip(xs, axes, strict=True):
        out.append(
            f'<line class="axis" x1="{_fmt(px)}" x2="{_fmt(px)}" y1="{_fmt(scale.end)}" '
            f'y2="{_fmt(scale.start)}"/>'
        )
        ticks = scale.ticks()
        if len(ticks) > 8:
            ticks = ticks[:: math.ceil(len(ticks) / 8)]
        for value, label in ticks:
            out.append(
                f'<text class="tick" x="{_fmt(px + 3)}" y="{_fmt(scale(value))}" '
                f'dominant-baseline="middle">{escape(label[:12])}</text>'
            )
        out.append(
            f'<text class="label" x="{_fmt(px)}" y="{height - 6}" '
            f'text-anchor="middle">{escape(name[:16])}</text>'
        )
    out.append("</svg>")
    return "".join(out)
