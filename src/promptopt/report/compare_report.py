"""A compare directory (``promptopt compare``'s out: compare.json, leaderboard.json, runs/…) as one ``report.html``:
every run's best-so-far dev curve on one plot, the leaderboard with test CIs, and a report page per finished run
(linked, relative paths). The formats are :mod:`promptopt.compare`'s docstring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import promptopt.report.page as h
from promptopt.core._files import write_text_atomic
from promptopt.core.exceptions import ConfigError
from promptopt.report.run_report import REPORT_FILE, RunData, read_run, write_run_report
from promptopt.report.svg import PALETTE, Series, interval_chart, line_chart

COMPARE_FILE, LEADERBOARD_FILE = "compare.json", "leaderboard.json"
DASHES = (None, "6 3", "2 3", "8 3 2 3")
"""Line styles of a run's seeds (the colour is its optimizer's)."""


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc}).", source=str(path)) from None


def read_compare(compare_dir: str | Path) -> tuple[dict[str, Any], dict[str, Any] | None, list[RunData]]:
    """compare.json, leaderboard.json (None until every run finished) and the run directories that exist."""
    root = Path(compare_dir)
    if not (root / COMPARE_FILE).is_file():
        raise ConfigError(
            f"not a compare directory (no {COMPARE_FILE}); give promptopt compare's --out.", source=str(root)
        )
    spec = _read(root / COMPARE_FILE)
    if not isinstance(spec, dict) or not isinstance(spec.get("runs"), list):
        raise ConfigError("not a compare file (no list of runs).", source=str(root / COMPARE_FILE))
    board = _read(root / LEADERBOARD_FILE) if (root / LEADERBOARD_FILE).is_file() else None
    runs = [read_run(root / r["run_dir"]) for r in spec["runs"] if (root / str(r.get("run_dir", ""))).is_dir()]
    return spec, board if isinstance(board, dict) else None, runs


def _colors(runs: list[RunData]) -> dict[str, str]:
    """One colour per optimizer, in the order of the runs."""
    optimizers = dict.fromkeys(str(r.config.get("optimizer", "?")) for r in runs)
    return {o: PALETTE[i % len(PALETTE)] for i, o in enumerate(optimizers)}


def curves_chart(runs: list[RunData]) -> str:
    """Every run's best-so-far full-dev mean against its calls, one colour per optimizer, one dash per seed."""
    colors = _colors(runs)
    optimizers = list(colors)
    series, seen_seed = [], {o: 0 for o in optimizers}
    for r in runs:
        opt = str(r.config.get("optimizer", "?"))
        color = colors[opt]
        dash = DASHES[seen_seed[opt] % len(DASHES)]
        seen_seed[opt] += 1
        pts = r.best_so_far()
        tips = [f"{opt} seed {r.config.get('seed', '?')}: best {y:.3f} after {x:g} calls" for x, y in pts]
        series.append(
            Series(
                f"{opt} · seed {r.config.get('seed', '?')}",
                pts,
                color=color,
                line="step",
                labels=tips,
                dash=dash,
                css="run",
            )
        )
    return line_chart(
        series,
        chart_id="curves",
        title="best dev score vs calls, all runs",
        x_label="model calls so far",
        y_label="best dev mean so far",
    )


def leaderboard_section(board: dict[str, Any] | None, colors: dict[str, str]) -> str:
    if board is None:
        return '<p class="muted">No leaderboard yet: some runs have not finished.</p>'
    rows = board.get("rows", [])

    def diff(c: dict[str, Any] | None) -> str:
        return "—" if not c else f"{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}] p={c['p_value']:.3g}"

    table = h.table(
        (
            "rank",
            "optimizer",
            "seeds",
            "test mean",
            "95% CI",
            "sd over seeds",
            "vs seed prompt",
            "vs leader",
            "calls",
            "tokens",
            "cost (USD)",
        ),
        [
            (
                r.get("rank"),
                r.get("optimizer"),
                r.get("n_seeds"),
                h.fmt(r.get("test_mean")),
                f"[{h.fmt(r.get('test_ci_low'))}, {h.fmt(r.get('test_ci_high'))}]",
                h.fmt(r.get("test_sd")),
                diff(r.get("vs_seed")),
                diff(r.get("vs_leader")),
                h.fmt(r.get("calls"), 0),
                h.fmt(r.get("tokens"), 0),
                h.fmt(r.get("cost"), 4),
            )
            for r in rows
        ],
        numeric=(0, 2, 3, 5, 8, 9, 10),
        best=0,
    )
    intervals = [
        (str(r.get("optimizer")), float(r["test_mean"]), float(r["test_ci_low"]), float(r["test_ci_high"]))
        for r in rows
        if r.get("test_mean") is not None and r.get("test_ci_low") is not None and r.get("test_ci_high") is not None
    ]
    chart = ""
    if intervals:
        palette = [colors.get(name, PALETTE[-1]) for name, _, _, _ in intervals]
        chart = interval_chart(intervals, chart_id="leaderboard", title="test mean by optimizer", colors=palette)
    head = f"<p>Task {h.esc(board.get('task', '?'))}, metric {h.esc(board.get('metric', '?'))}, "
    head += f"{h.esc(board.get('n_test', '?'))} test examples; leader {h.esc(board.get('leader', '?'))}.</p>"
    return head + table + chart


def runs_section(spec: dict[str, Any], root: Path) -> str:
    rows = []
    for r in spec["runs"]:
        run_dir = str(r.get("run_dir", ""))
        report = root / run_dir / REPORT_FILE
        link = f'<a href="{h.esc(f"{run_dir}/{REPORT_FILE}")}">report</a>' if report.is_file() else "—"
        rows.append(
            f"<tr><td>{h.esc(r.get('optimizer'))}</td><td>{h.esc(r.get('seed'))}</td><td>{h.esc(r.get('status'))}"
            f"</td><td>{h.esc(run_dir)}</td><td>{link}</td></tr>"
        )
    head = "".join(f"<th>{x}</th>" for x in ("optimizer", "seed", "status", "run directory", "page"))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_compare_report(compare_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the compare's page (default ``compare_dir/report.html``) and a report of each of its runs, and return
    the compare page's path."""
    root = Path(compare_dir)
    spec, board, runs = read_compare(root)
    for run in runs:
        write_run_report(run.path)
    settings = spec.get("settings", {})
    subtitle = (
        f"task {settings.get('task', '?')} · model {settings.get('model', '?')} · budget "
        f"{json.dumps({k: v for k, v in settings.get('budget', {}).items() if v is not None})} · "
        f"{len(spec['runs'])} runs"
    )
    sections = [
        h.section("curves", "Best dev score vs model calls", curves_chart(runs)),
        h.section("leaderboard", "Leaderboard (test)", leaderboard_section(board, _colors(runs))),
        h.section("runs", "Runs", runs_section(spec, root)),
    ]
    target = Path(out) if out is not None else root / REPORT_FILE
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(target, h.page("promptopt compare report", subtitle, sections))
    except OSError as exc:
        raise ConfigError(f"cannot write the report ({exc.strerror}).", source=str(target), field="out") from None
    return target
