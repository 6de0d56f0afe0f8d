"""The report as one self-contained HTML page (inline CSS and SVG, no network) and its markdown twin.

A section is a list of blocks: a paragraph (str), a Table, or a Chart, which the page draws and the
markdown leaves to the tables beside it. Everything is escaped; the page's Content-Security-Policy
allows no script but the render check, by its hash.
"""

from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass
from typing import Union

from persyn.report.charts import RENDER_CHECK, Chart, figure

MISSING = "missing input"  # how a paragraph that stands in for a section's missing inputs starts
STYLE = ("body{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:1150px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:4px 8px;"
         "text-align:left;vertical-align:top;white-space:pre-wrap}th{background:#f3f3f3}figure.plot{margin:1em 0}"
         "figcaption{color:#555;font-size:12px}.missing{color:#a33}nav a{margin-right:1em}")


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


Block = Union[str, Table, Chart]  # a str is a paragraph
Part = tuple[str, str, list[Block]]  # anchor, heading, blocks


def html_page(title: str, subtitle: str, parts: list[Part]) -> str:
    policy = f"sha256-{base64.b64encode(hashlib.sha256(RENDER_CHECK.encode()).digest()).decode()}"
    e = html.escape
    out = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
           f"content=\"default-src 'none'; style-src 'unsafe-inline'; script-src '{policy}'\"><title>{e(title)}</title>"
           f"<style>{STYLE}</style></head><body><h1>{e(title)}</h1><p>{e(subtitle)}</p><nav>"
           + "".join(f'<a href="#{anchor}">{e(name)}</a>' for anchor, name, _ in parts) + "</nav>"]
    for anchor, name, blocks in parts:
        out.append(f'<section id="{anchor}"><h2>{e(name)}</h2>')
        for block in blocks:
            if isinstance(block, Chart):
                out.append(figure(block))
            elif isinstance(block, Table):
                out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in block.header) + "</tr>" + "".join(
                    "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows) + "</table>")
            else:
                missing = ' class="missing"' if block.startswith(MISSING) else ""
                out.append(f"<p{missing}>{e(block)}</p>")
        out.append("</section>")
    return "\n".join(out) + f"\n<script>{RENDER_CHECK}</script></body></html>\n"


def markdown(title: str, subtitle: str, parts: list[Part]) -> str:
    """The same sections, the charts' numbers as tables; text HTML-escaped, since renderers pass HTML through."""

    def cell(text: str) -> str:
        return html.escape(text, quote=False).replace("|", "\\|").replace("\n", "<br>")

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell(c) for c in cells) + " |"

    out = [f"# {title}\n\n{subtitle}\n"]
    for _, name, blocks in parts:
        out.append(f"## {name}\n")
        for block in blocks:
            if isinstance(block, Table):
                out.append("\n".join([line(block.header), "|" + "---|" * len(block.header), *map(line, block.rows)]) + "\n")
            elif isinstance(block, str):
                out.append(cell(block) + "\n")
    return "\n".join(out)
