"""The report's charts: Vega-Lite specs (the grammar DVC's own plots use), drawn to inline SVG.

vl-convert runs Vega-Lite inside the process: no browser, no network (external data is refused),
no JavaScript in the page. Its text layout uses the Liberation Sans built into vl-convert (metric-
compatible with Arial and Helvetica), not the fonts the machine has, so the same chart gives the
same bytes everywhere with the same vl-convert. Each chart is a `<figure class="plot" id=…>`
holding one `<svg>` and a caption.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any, Callable

VEGA_LITE = "5.21"  # the v5 schema DVC's plot templates are written in
FONT = "Liberation Sans, Arial, Helvetica, sans-serif"
PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c"]
WIDTH = 520
CONFIG = {"font": FONT, "background": "white", "view": {"stroke": None}, "range": {"category": PALETTE},
          "axis": {"labelFontSize": 11, "titleFontSize": 12, "labelLimit": 220},
          "legend": {"orient": "top", "title": None, "labelFontSize": 12, "labelLimit": 400}}
# A page may run this after load so that a headless browser test can read each plot's laid-out size
# and how many of its marks were drawn with a non-zero size.
RENDER_CHECK = ("for(const f of document.querySelectorAll('figure.plot')){const s=f.querySelector('svg')"
                ".getBoundingClientRect();f.dataset.rendered=Math.round(s.width)+'x'+Math.round(s.height);"
                "f.dataset.marks=[...f.querySelectorAll('.role-mark > *')].filter(m=>{const b=m.getBoundingClientRect();"
                "return b.width>0||b.height>0}).length}")


@dataclass(frozen=True)
class Chart:
    """A Vega-Lite spec with its figure's id and caption; drawn only when the HTML page is."""

    plot_id: str
    title: str
    spec: dict[str, Any]


def colour(names: list[str]) -> dict[str, Any]:
    """Series colours in the given order; a legend only when there is more than one series."""
    return {"field": "series", "type": "nominal", "sort": names, "scale": {"domain": names},
            "legend": {} if len(names) > 1 else None}


def bars(plot_id: str, title: str, labels: list[str], series: dict[str, list[float]],
         fmt: Callable[[float], str], top: float | None = None) -> Chart:
    """Horizontal bars from zero, one group per label and one bar per series, each with its value."""
    names = list(series)
    rows = [{"label": label, "series": name, "value": values[i], "text": fmt(values[i])}
            for name, values in series.items() for i, label in enumerate(labels)]
    values = [row["value"] for row in rows]
    x: dict[str, Any] = {"field": "value", "type": "quantitative", "title": None}
    if top is not None:
        x["scale"] = {"domain": [min(0.0, *values), max(top, *values)]}
    encoding = {"y": {"field": "label", "type": "nominal", "sort": labels, "title": None}, "x": x,
                "yOffset": {"field": "series", "type": "nominal", "sort": names}, "color": colour(names)}
    return Chart(plot_id, title, {
        "data": {"values": rows}, "width": WIDTH, "height": {"step": 17}, "encoding": encoding,
        "layer": [{"mark": {"type": "bar"}},
                  {"mark": {"type": "text", "align": "left", "dx": 4}, "encoding": {"text": {"field": "text"},
                                                                                   "color": {"value": "#222"}}}]})


def histograms(plot_id: str, title: str, series: dict[str, list[float]], xlabel: str, bins: int = 10) -> Chart:
    """One histogram per series, stacked in rows, on the same `bins` equal-width bins."""
    names = list(series)
    values = [v for column in series.values() for v in column]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5, hi + 0.5
    rows = [{"series": name, "value": v} for name, column in series.items() for v in column]
    binned = {"extent": [lo, hi], "step": (hi - lo) / bins, "nice": False}
    return Chart(plot_id, title, {
        "data": {"values": rows},
        "facet": {"row": {"field": "series", "type": "nominal", "sort": names, "title": None,
                          "header": {"labelAngle": 0, "labelAlign": "left", "labelFontSize": 12}}},
        "spec": {"width": WIDTH - 80, "height": 60, "mark": {"type": "bar", "binSpacing": 1},
                 "encoding": {"x": {"field": "value", "type": "quantitative", "bin": binned, "title": xlabel},
                              "y": {"aggregate": "count", "type": "quantitative", "title": "answers"},
                              "color": {**colour(names), "legend": None}}}})


def lines(plot_id: str, title: str, series: dict[str, list[tuple[float, float]]], xlabel: str, ylabel: str,
          xlim: tuple[float, float] | None = None, ylim: tuple[float, float] | None = None,
          diagonal: bool = False) -> Chart:
    """Points (x, y) joined per series; `diagonal` adds the dashed y = x reference line."""
    names = list(series)
    rows = [{"series": name, "x": x, "y": y} for name, points in series.items() for x, y in points]
    x: dict[str, Any] = {"field": "x", "type": "quantitative", "title": xlabel}
    y: dict[str, Any] = {"field": "y", "type": "quantitative", "title": ylabel}
    if xlim:
        x["scale"] = {"domain": list(xlim)}
    if ylim:
        y["scale"] = {"domain": list(ylim)}
    layers: list[dict[str, Any]] = [{"mark": {"type": "line", "strokeWidth": 2}},
                                    {"mark": {"type": "point", "filled": True, "size": 70, "opacity": 1}}]
    if diagonal:
        lo, hi = max(xlim[0], ylim[0]), min(xlim[1], ylim[1])  # type: ignore[index]
        layers.insert(0, {"data": {"values": [{"x": lo, "y": lo}, {"x": hi, "y": hi}]},
                          "mark": {"type": "line", "color": "#999", "strokeDash": [4, 4]},
                          "encoding": {"x": {"field": "x", "type": "quantitative"},
                                       "y": {"field": "y", "type": "quantitative"}, "color": {"value": "#999"}}})
    return Chart(plot_id, title, {"data": {"values": rows}, "width": WIDTH, "height": 220,
                                  "encoding": {"x": x, "y": y, "color": {**colour(names), "legend": {}}},
                                  "layer": layers})


def intervals(plot_id: str, title: str, rows: list[tuple[str, float, float, float]], xlabel: str,
              domain: tuple[float, float] | None = None) -> Chart:
    """One row per (label, mean, low, high): the mean as a dot, its interval as an error bar, and
    the numbers beside it."""
    data = [{"label": label, "mean": mean, "low": low, "high": high, "text": f"{mean:.3f} [{low:.3f}, {high:.3f}]"}
            for label, mean, low, high in rows]
    x: dict[str, Any] = {"type": "quantitative", "title": xlabel}
    if domain:
        x["scale"] = {"domain": list(domain)}
    y = {"field": "label", "type": "nominal", "sort": [r[0] for r in rows], "title": None}
    return Chart(plot_id, title, {
        "data": {"values": data}, "width": WIDTH - 120, "height": {"step": 26}, "encoding": {"y": y},
        "layer": [{"mark": {"type": "errorbar", "ticks": True, "color": PALETTE[0]},
                   "encoding": {"x": {**x, "field": "low"}, "x2": {"field": "high"}}},
                  {"mark": {"type": "point", "filled": True, "size": 60, "opacity": 1, "color": PALETTE[0]},
                   "encoding": {"x": {**x, "field": "mean"}}},
                  {"mark": {"type": "text", "align": "left", "dx": 8},
                   "encoding": {"x": {**x, "field": "high"}, "text": {"field": "text"}}}]})


def namespaced(svg: str, plot_id: str) -> str:
    """The SVG with its ids (Vega's clip paths: clip1, …) prefixed by the plot's, so that several
    charts inline in one page never point at each other's."""
    return re.sub(r'(\bid="|url\(#|href="#)([^")]+)', lambda m: f"{m.group(1)}{plot_id}-{m.group(2)}", svg)


def figure(chart: Chart) -> str:
    """The chart drawn by Vega-Lite, in its figure with a caption; same chart, same bytes."""
    import vl_convert

    spec = {"config": CONFIG, **chart.spec}
    drawn = vl_convert.vegalite_to_svg(spec, vl_version=VEGA_LITE, allowed_base_urls=[])
    escaped = html.escape(chart.plot_id, quote=True)
    return (f'<figure class="plot" id="{escaped}">{namespaced(drawn, chart.plot_id)}'
            f"<figcaption>{html.escape(chart.title)}</figcaption></figure>")
