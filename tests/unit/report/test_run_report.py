"""The run report as a file: self-contained, escaped, every section there, the charts drawn from the run's data."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from report_fixtures import HOSTILE
from typer.testing import CliRunner

import promptopt
from promptopt.cli.app import app
from promptopt.core.exceptions import ConfigError
from promptopt.report import REPORT_FILE, read_run, write_run_report
from promptopt.report.svg import Series, line_chart, nice_ticks
from promptopt.testing import make_toy_task, toy_model

SECTIONS = ("trajectory", "candidates", "spend", "test", "decisions", "best-prompt", "settings")


def _svg(html: str, chart_id: str) -> str:
    m = re.search(rf'<svg [^>]*data-chart="{chart_id}".*?</svg>', html, re.DOTALL)
    assert m, f"no chart {chart_id}"
    return m.group(0)


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_report_is_self_contained(run_dir: Path) -> None:
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    assert not re.search(r"https?://|//cdn|@import|url\(", html, re.IGNORECASE)
    parser = _Tags()
    parser.feed(html)
    names = [t for t, _ in parser.tags]
    assert "svg" in names and not {"link", "img", "iframe", "object", "embed"} & set(names)
    loading = [(t, a) for t, a in parser.tags if {"src", "href", "xlink:href", "srcset"} & set(a)]
    assert not loading, "the page loads nothing"
    assert names.count("script") == 2  # the page's own two inline scripts


def test_prompts_stay_text(run_dir: Path) -> None:
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;&lt;/pre&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "<img" not in html and 'alert("pwned")' not in html


def test_every_section_is_there(run_dir: Path) -> None:
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    for sid in SECTIONS:
        assert f'<section id="{sid}">' in html
    result = promptopt.OptimizationResult.load(run_dir)
    assert result.stop_reason in html and result.selection in html
    assert f"{result.test_comparison['diff']:+.3f}" in html  # the paired Δ on test
    assert "<th>cache hits</th>" in html and "<td>proposer</td>" in html


def test_trajectory_draws_every_trial(run_dir: Path) -> None:
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    run = read_run(run_dir)
    full = [r for r in run.history if r.full and r.result is not None]
    mini = [r for r in run.history if not r.full and r.result is not None]
    assert full and mini, "the fixture run screens on minibatches and confirms on full dev"
    chart = _svg(html, "trajectory")
    assert chart.count('class="point full"') == len(full)
    assert chart.count('class="point minibatch"') == len(mini)
    assert chart.count('class="line best"') == 1  # the best-so-far step line
    assert chart.count('class="ref seed"') == 1  # the seed's dev score
    assert _svg(html, "test").count('class="point"') == 2
    table = html[html.index('<section id="candidates">') :].split("</section>")[0]
    assert table.count("<tr") == len(run.history) + 1
    assert table.count('<tr class="best">') == 1


def test_best_prompt_as_the_model_sees_it(run_dir: Path) -> None:
    html = write_run_report(run_dir).read_text(encoding="utf-8")
    section = html[html.index('<section id="best-prompt">') :].split("</section>")[0]
    assert '<div class="role">system</div>' in section and '<div class="role">user</div>' in section
    assert "Word: " in section and "{word}" not in section  # a real dev example, not placeholders
    assert "first dev example" in section


def test_a_python_task_renders_with_placeholders(tmp_path: Path) -> None:
    promptopt.optimize(make_toy_task(), "baseline", toy_model(), cache=False, run_dir=tmp_path / "run")
    html = write_run_report(tmp_path / "run").read_text(encoding="utf-8")
    assert "Word: {word}" in html and "placeholders" in html
    task_html = write_run_report(tmp_path / "run", tmp_path / "t.html", task=make_toy_task()).read_text()
    assert "Word: {word}" not in task_html


def test_an_unfinished_run_still_reports(run_dir: Path, tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(run_dir, partial)
    (partial / "result.json").unlink()
    html = write_run_report(partial).read_text(encoding="utf-8")
    assert "has not finished" in html
    assert _svg(html, "trajectory").count('class="point ') == len(read_run(run_dir).history)


def test_out_and_errors(run_dir: Path, tmp_path: Path) -> None:
    out = write_run_report(run_dir, tmp_path / "sub" / "r.html")
    assert out == tmp_path / "sub" / "r.html" and out.is_file()
    assert write_run_report(run_dir) == run_dir / REPORT_FILE
    with pytest.raises(ConfigError, match="not a run directory"):
        write_run_report(tmp_path / "nothing")


def test_cli_report(run_dir: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["report", str(run_dir), "--out", str(tmp_path / "cli.html")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.html").is_file() and "cli.html" in result.output
    bad = runner.invoke(app, ["report", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "not a run directory" in bad.output


def test_damaged_result_is_bad_input(run_dir: Path, tmp_path: Path) -> None:
    damaged = tmp_path / "damaged"
    shutil.copytree(run_dir, damaged)
    (damaged / "result.json").write_text(json.dumps({"task": "x"}))
    with pytest.raises(ConfigError, match="not a run result"):
        write_run_report(damaged)


def test_svg_helpers() -> None:
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3, 97)[0] == 20 and nice_ticks(3, 97)[-1] == 80
    two = [Series("a <b>", [(0, 0.1), (5, 0.5)]), Series("c", [(1, 0.2), (2, 0.9), (3, 0.3)], line="step")]
    svg = line_chart(two, chart_id="x", title="t", x_label="calls", y_label="score")
    assert svg.count('class="point ') == 5 and svg.count("<polyline") == 2
    assert "a &lt;b&gt;" in svg and "<b>" not in svg
    empty = line_chart([Series("none", [])], chart_id="e", title="t", x_label="x", y_label="y")
    assert empty.startswith("<svg") and 'class="point' not in empty
