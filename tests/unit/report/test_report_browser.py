"""The reports as a user sees them: opened in headless Chromium, their own script reports what rendered.

Outside CI a missing Chromium skips these tests; in CI (env CI set, as .ci/run does) it fails them."""

from __future__ import annotations

from pathlib import Path

from promptopt.report import read_run, write_compare_report, write_run_report
from promptopt.testing.browser import dump_dom, render_check, require_chromium, screenshot

PNG = b"\x89PNG\r\n\x1a\n"


def _charts(check: dict) -> dict[str, dict]:
    return {c["id"]: c for c in check["charts"]}


def test_run_report_renders_in_chromium(run_dir: Path, tmp_path: Path) -> None:
    browser = require_chromium()
    page = write_run_report(run_dir, tmp_path / "report.html")
    check = render_check(page, browser=browser)
    assert check["errors"] == []
    assert check["sections"] == 7
    charts = _charts(check)
    evaluated = [r for r in read_run(run_dir).history if r.result is not None]
    assert charts["trajectory"]["points"] == len(evaluated)
    assert charts["test"]["points"] == 2
    for chart in charts.values():
        assert chart["width"] > 0 and chart["height"] > 0 and chart["elements"] > chart["points"]
    shot = screenshot(page, tmp_path / "report.png", browser=browser)
    assert shot.read_bytes().startswith(PNG)


def test_hostile_prompt_runs_no_script(run_dir: Path, tmp_path: Path) -> None:
    """The best prompt holds <script> and an <img onerror>: as text they raise nothing (an executed alert() would
    fail headless or show as an error; a parsed <img> would be a DOM element)."""
    browser = require_chromium()
    page = write_run_report(run_dir, tmp_path / "report.html")
    check = render_check(page, browser=browser)
    assert check["errors"] == []

    dom = dump_dom(page, browser=browser)
    assert "<img" not in dom and "&lt;img src=x" in dom


def test_compare_report_renders_in_chromium(compare_dir: Path, tmp_path: Path) -> None:
    browser = require_chromium()
    page = write_compare_report(compare_dir)
    check = render_check(page, browser=browser)
    assert check["errors"] == []
    runs = [read_run(compare_dir / f"runs/{n}") for n in ("ape-seed0", "ape-seed1", "opro-seed0")]
    assert _charts(check)["curves"]["points"] == sum(len(r.best_so_far()) for r in runs)
    assert screenshot(page, tmp_path / "compare.png", browser=browser).read_bytes().startswith(PNG)
