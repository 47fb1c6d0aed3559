"""The compare report: every run's best-so-far curve on one plot, the leaderboard, a page per run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from promptopt.core.exceptions import ConfigError
from promptopt.report import REPORT_FILE, read_run, write_compare_report


def test_one_curve_per_run(compare_dir: Path) -> None:
    html = write_compare_report(compare_dir).read_text(encoding="utf-8")
    chart = re.search(r'<svg [^>]*data-chart="curves".*?</svg>', html, re.DOTALL)
    assert chart
    runs = [read_run(compare_dir / f"runs/{n}") for n in ("ape-seed0", "ape-seed1", "opro-seed0")]
    assert chart.group(0).count('class="line run"') == 3
    assert chart.group(0).count('class="point run"') == sum(len(r.best_so_far()) for r in runs)
    assert "No leaderboard yet" in html and "pending" in html


def test_links_each_run_page(compare_dir: Path) -> None:
    html = write_compare_report(compare_dir).read_text(encoding="utf-8")
    for name in ("ape-seed0", "ape-seed1", "opro-seed0"):
        assert (compare_dir / "runs" / name / REPORT_FILE).is_file()
        assert f'href="runs/{name}/{REPORT_FILE}"' in html
    assert "runs/opro-seed1/report.html" not in html  # a run not started has no page
    assert not re.search(r"https?://", html)


def test_leaderboard(compare_dir: Path, tmp_path: Path) -> None:
    row = {"rank": 1, "optimizer": "ape", "n_seeds": 2, "test_mean": 0.9, "test_sd": 0.0, "test_ci_low": 0.6,
           "test_ci_high": 0.98, "vs_seed": {"diff": 0.5, "ci_low": 0.2, "ci_high": 0.7, "p_value": 0.01},
           "vs_leader": None, "calls": 100, "tokens": 2000, "cost": 0.0}  # fmt: skip
    board = {"task": "toy", "metric": "exact_match", "n_test": 10, "leader": "ape", "rows": [row]}
    (compare_dir / "leaderboard.json").write_text(json.dumps(board))
    try:
        html = write_compare_report(compare_dir, tmp_path / "c.html").read_text(encoding="utf-8")
    finally:
        (compare_dir / "leaderboard.json").unlink()
    assert "+0.500 [+0.200, +0.700]" in html and 'data-chart="leaderboard"' in html


def test_not_a_compare_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a compare directory"):
        write_compare_report(tmp_path)


def test_a_real_compare_directory(tmp_path: Path) -> None:
    """What promptopt compare writes (compare.json, leaderboard.json, runs/) reports as it is."""
    from promptopt.compare import compare_optimizers
    from promptopt.models.budget import Budget
    from promptopt.testing import toy_model, write_toy_task

    task = write_toy_task(tmp_path / "task", n_train=6, n_dev=16, n_test=10)
    model = toy_model(["Reverse the word.", "Reverse the word, letter by letter."])
    compare_optimizers(str(task), ["ape", "opro"], model=model, budget=Budget(max_calls=300), out=tmp_path / "cmp")
    html = write_compare_report(tmp_path / "cmp").read_text(encoding="utf-8")
    assert html.count('class="line run"') == 2
    assert 'data-chart="leaderboard"' in html and "No leaderboard yet" not in html
    assert 'href="runs/ape-seed0/report.html"' in html


def test_cli_reports_a_compare_directory(compare_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from promptopt.cli.app import app

    result = CliRunner().invoke(app, ["report", str(compare_dir), "--out", str(tmp_path / "c.html")])
    assert result.exit_code == 0, result.output
    assert 'data-chart="curves"' in (tmp_path / "c.html").read_text(encoding="utf-8")
