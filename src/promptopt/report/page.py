"""The HTML around the charts: one self-contained page (inline CSS, a little inline JS, no URL), tables, escaping.

Everything shown goes through :func:`esc` (prompts, model answers and task names are untrusted data). The page's
inline script records JavaScript errors (``window.onerror``) and, once loaded, writes what it found into
``<pre id="render-check">`` as JSON — per chart its id, the markers drawn and the rendered size — so a headless
browser's DOM dump says whether the plots rendered (:mod:`promptopt.testing.browser`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from html import escape
from typing import Any

CSS = """
body { font: 14px/1.45 system-ui, sans-serif; color: #222; margin: 24px auto; max-width: 1000px; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 32px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f7f7f7; } .defs th { font-weight: 500; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.best td { background: #eef6ee; font-weight: 600; }
.msg { border: 1px solid #ccc; border-radius: 6px; margin: 8px 0; }
.msg .role { background: #f3f3f3; padding: 2px 8px; font-weight: 600; font-size: 12px; }
.msg pre, pre.text { margin: 0; padding: 8px; white-space: pre-wrap; word-break: break-word; }
.muted { color: #666; } .chart { max-width: 100%; height: auto; }
#render-check, #js-errors { display: none; }
"""

HEAD_JS = """
window.__errors = [];
window.onerror = function (msg, src, line) { window.__errors.push(String(msg) + " (line " + line + ")"); };
"""

CHECK_JS = """
window.addEventListener("load", function () {
  var charts = [];
  document.querySelectorAll("svg.chart").forEach(function (s) {
    var box = s.getBoundingClientRect();
    charts.push({id: s.getAttribute("data-chart"), points: s.querySelectorAll(".point").length,
                 elements: s.querySelectorAll("*").length, width: box.width, height: box.height});
  });
  var out = {errors: window.__errors, charts: charts, sections: document.querySelectorAll("section").length};
  document.getElementById("render-check").textContent = JSON.stringify(out);
  document.getElementById("js-errors").textContent = window.__errors.join("\\n");
});
"""


def esc(value: Any) -> str:
    """``value`` as HTML text, quotes included."""
    return escape(str(value), quote=True)


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a table cell; ``n/a`` for missing or NaN."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def ci_text(s: Mapping[str, Any] | None) -> str:
    if not s or s.get("ci_low") is None:
        return "n/a"
    return f"[{s['ci_low']:.3f}, {s['ci_high']:.3f}]"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, numeric: Sequence[int] = (), best: int = -1) -> str:
    """A table of escaped cells; columns ``numeric`` right-aligned, row ``best`` highlighted."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for i, row in enumerate(rows):
        cells = "".join(
            f'<td class="num">{esc(c)}</td>' if j in numeric else f"<td>{esc(c)}</td>" for j, c in enumerate(row)
        )
        body.append(f'<tr class="best">{cells}</tr>' if i == best else f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def definitions(items: Sequence[tuple[str, Any]]) -> str:
    """Label → value rows (values escaped)."""
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in items)
    return f'<table class="defs"><tbody>{body}</tbody></table>'


def messages(msgs: Sequence[tuple[str, str]]) -> str:
    """Chat messages (role, content) as boxes, the role on top, the content as preformatted escaped text."""
    return "".join(
        f'<div class="msg"><div class="role">{esc(role)}</div><pre>{esc(content)}</pre></div>' for role, content in msgs
    )


def section(section_id: str, title: str, body: str) -> str:
    return f'<section id="{esc(section_id)}"><h2>{esc(title)}</h2>{body}</section>'


def page(title: str, subtitle: str, sections: Sequence[str]) -> str:
    """The whole document."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{CSS}</style><script>{HEAD_JS}</script></head><body>"
        f'<h1>{esc(title)}</h1><p class="muted">{esc(subtitle)}</p>'
        f"{''.join(sections)}"
        '<pre id="js-errors"></pre><pre id="render-check"></pre>'
        f"<script>{CHECK_JS}</script></body></html>\n"
    )
