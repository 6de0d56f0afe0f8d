"""Tiny inline-SVG charts for `persyn report`: horizontal bars, histograms and line charts.

No plotting library and no JavaScript: each chart is a `<figure class="plot" id=…>` holding one
`<svg>` with a viewBox and a fixed size, a `<title>` for screen readers, and drawn marks
(class "mark") that each carry a `<title>`, which browsers show on hover. Same input, same bytes.
"""

from __future__ import annotations

import html
from typing import Callable, Sequence

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")
WIDTH = 640
LEFT, RIGHT, TOP, BOTTOM = 150, 70, 34, 44
# A page may run this after load so that a headless browser test can read each plot's laid-out size
# and how many of its marks were drawn with a non-zero size.
RENDER_CHECK = ("for(const f of document.querySelectorAll('figure.plot')){const s=f.querySelector('svg')"
                ".getBoundingClientRect();f.dataset.rendered=Math.round(s.width)+'x'+Math.round(s.height);"
                "f.dataset.marks=[...f.querySelectorAll('.mark')].filter(m=>{const b=m.getBoundingClientRect();"
                "return b.width>0||b.height>0}).length}")


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def tick(value: float) -> str:
    return f"{value:.3g}"


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def figure(plot_id: str, title: str, height: int, body: list[str], legend: Sequence[str] = ()) -> str:
    """The figure/svg wrapper every chart shares, with a legend along the top when there are series."""
    keys = [f'<rect x="{LEFT + 130 * i}" y="8" width="10" height="10" fill="{colour(i)}"/>'
            f'<text x="{LEFT + 130 * i + 14}" y="17">{esc(name)}</text>' for i, name in enumerate(legend)]
    return (f'<figure class="plot" id="{esc(plot_id)}">'
            f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" '
            f'height="{height}" role="img" aria-labelledby="{esc(plot_id)}-title">'
            f'<title id="{esc(plot_id)}-title">{esc(title)}</title>{"".join(keys)}{"".join(body)}</svg>'
            f'<figcaption>{esc(title)}</figcaption></figure>')


def scale(lo: float, hi: float, start: float, end: float) -> Callable[[float], float]:
    span = hi - lo if hi > lo else 1.0
    return lambda v: start + (v - lo) / span * (end - start)


def bars(plot_id: str, title: str, labels: list[str], series: dict[str, list[float]],
         fmt: Callable[[float], str] = tick, top: float | None = None) -> str:
    """Horizontal bars, one group per label and one bar per series; bars start at zero."""
    names = list(series)
    values = [v for column in series.values() for v in column]
    lo, hi = min(0.0, *values), max(0.0, *values, top or 0.0)
    x = scale(lo, hi, LEFT, WIDTH - RIGHT)
    band, top_margin = 16 * len(names) + 12, TOP if len(names) > 1 else 8  # room for a legend only if needed
    height = top_margin + band * len(labels) + 12
    body = [f'<line x1="{x(0):.1f}" y1="{top_margin - 4}" x2="{x(0):.1f}" y2="{height - 8}" stroke="#444"/>']
    for row, label in enumerate(labels):
        y0 = top_margin + row * band
        body.append(f'<text x="{LEFT - 8}" y="{y0 + band / 2:.1f}" text-anchor="end" dominant-baseline="middle">'
                    f'{esc(label)}</text>')
        for k, name in enumerate(names):
            value = series[name][row]
            left, right = sorted((x(0), x(value)))
            y = y0 + 4 + 16 * k
            body.append(f'<rect class="mark" x="{left:.1f}" y="{y}" width="{right - left:.1f}" height="13" '
                        f'fill="{colour(k)}"><title>{esc(label)}{" · " + esc(name) if len(names) > 1 else ""}: '
                        f'{esc(fmt(value))}</title></rect>'
                        f'<text x="{right + 4:.1f}" y="{y + 10}">{esc(fmt(value))}</text>')
    return figure(plot_id, title, height, body, names if len(names) > 1 else [])


def axes(x: Callable[[float], float], y: Callable[[float], float], xticks: list[float], yticks: list[float],
         xlabel: str, ylabel: str, height: int) -> list[str]:
    """Frame, tick labels and axis titles shared by the histogram and the line chart."""
    x0, x1, y0, y1 = x(xticks[0]), x(xticks[-1]), y(yticks[0]), y(yticks[-1])
    parts = [f'<path d="M{x0:.1f} {y1:.1f}V{y0:.1f}H{x1:.1f}" fill="none" stroke="#444"/>']
    parts += [f'<text x="{x(t):.1f}" y="{y0 + 16:.1f}" text-anchor="middle">{tick(t)}</text>' for t in xticks]
    parts += [f'<text x="{x0 - 6:.1f}" y="{y(t):.1f}" text-anchor="end" dominant-baseline="middle">{tick(t)}</text>'
              for t in yticks]
    parts.append(f'<text x="{(x0 + x1) / 2:.1f}" y="{height - 6}" text-anchor="middle">{esc(xlabel)}</text>')
    parts.append(f'<text x="{x0 - 44:.1f}" y="{(y0 + y1) / 2:.1f}" text-anchor="middle" '
                 f'transform="rotate(-90 {x0 - 44:.1f} {(y0 + y1) / 2:.1f})">{esc(ylabel)}</text>')
    return parts


def spaced(lo: float, hi: float, count: int = 5) -> list[float]:
    return [lo + (hi - lo) * i / (count - 1) for i in range(count)]


def histogram(plot_id: str, title: str, series: dict[str, list[float]], xlabel: str, bins: int = 10) -> str:
    """Counts per bin on shared bin edges, the series' bars side by side within each bin."""
    values = [v for column in series.values() for v in column]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    edges = spaced(lo, hi, bins + 1)
    counts = {name: [0] * bins for name in series}
    for name, column in series.items():
        for v in column:
            counts[name][min(int((v - lo) / (hi - lo) * bins), bins - 1)] += 1
    height = 260
    step = max(1, -(-max(max(c) for c in counts.values()) // 4))  # whole-number count ticks
    yticks = [float(step * i) for i in range(5)]
    x = scale(lo, hi, LEFT, WIDTH - RIGHT)
    y = scale(0, yticks[-1], height - BOTTOM, TOP)
    width = (x(edges[1]) - x(edges[0])) / len(series)
    body = axes(x, y, edges[::2] if bins > 6 else edges, yticks, xlabel, "answers", height)
    for k, (name, column) in enumerate(counts.items()):
        for b, count in enumerate(column):
            if count:
                body.append(f'<rect class="mark" x="{x(edges[b]) + k * width:.1f}" y="{y(count):.1f}" '
                            f'width="{width:.1f}" height="{y(0) - y(count):.1f}" fill="{colour(k)}">'
                            f'<title>{esc(name)}: {count} in [{tick(edges[b])}, {tick(edges[b + 1])}]</title></rect>')
    return figure(plot_id, title, height, body, list(series))


def lines(plot_id: str, title: str, series: dict[str, list[tuple[float, float, str]]], xlabel: str, ylabel: str,
          xlim: tuple[float, float] | None = None, ylim: tuple[float, float] | None = None,
          diagonal: bool = False) -> str:
    """Points (x, y, hover text) joined per series; `diagonal` adds the y = x reference line."""
    xs = [p[0] for points in series.values() for p in points]
    ys = [p[1] for points in series.values() for p in points]
    xlim = xlim or (min(xs), max(xs))
    ylim = ylim or (min(0.0, *ys), max(ys))
    height = 300
    x = scale(*xlim, LEFT, WIDTH - RIGHT)
    y = scale(*ylim, height - BOTTOM, TOP)
    body = axes(x, y, spaced(*xlim), spaced(*ylim), xlabel, ylabel, height)
    if diagonal:
        lo, hi = max(xlim[0], ylim[0]), min(xlim[1], ylim[1])
        body.append(f'<line x1="{x(lo):.1f}" y1="{y(lo):.1f}" x2="{x(hi):.1f}" y2="{y(hi):.1f}" stroke="#999" '
                    f'stroke-dasharray="4 4"><title>perfect calibration</title></line>')
    for k, (name, points) in enumerate(series.items()):
        if len(points) > 1:
            coordinates = " ".join(f"{x(px):.1f},{y(py):.1f}" for px, py, _ in points)
            body.append(f'<polyline class="mark" points="{coordinates}" fill="none" stroke="{colour(k)}" '
                        f'stroke-width="2"><title>{esc(name)}</title></polyline>')
        body += [f'<circle class="mark" cx="{x(px):.1f}" cy="{y(py):.1f}" r="5" fill="{colour(k)}">'
                 f'<title>{esc(name)}: {esc(text)}</title></circle>' for px, py, text in points]
    return figure(plot_id, title, height, body, list(series))
