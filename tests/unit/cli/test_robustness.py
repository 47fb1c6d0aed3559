"""``promptopt robustness``: the score under equivalent instructions, as a table or JSON, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from promptopt.cli.app import app

runner = CliRunner()


def test_robustness_scores_the_prompt_under_rule_paraphrases(tmp_path: Path) -> None:
    args = ["robustness", "--task", "sst2", "--model", "fake:echo", "--source", "rules", "--limit", "4"]
    result = runner.invoke(app, [*args, "-n", "3", "--embedder", "tfidf", "--cache", str(tmp_path / "c.db"), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["n_paraphrases"] == 4 and summary["n"] == 4 and summary["proposed"] == 0
    first, *others = summary["paraphrases"]
    assert first["source"] == "original" and first["instruction"].startswith("Is the sentiment")
    assert all(o["source"] != "original" and o["instruction"] != first["instruction"] for o in others)
    assert summary["min"] <= summary["median"] <= summary["max"]
    table = runner.invoke(app, [*args, "-n", "2", "--embedder", "tfidf", "--cache", str(tmp_path / "c.db")])
    assert table.exit_code == 0 and "paraphrases on test (n=4)" in table.output


def test_robustness_refuses_an_unknown_source() -> None:
    result = runner.invoke(app, ["robustness", "--task", "sst2", "--model", "fake:echo", "--source", "magic"])
    assert result.exit_code == 2 and "unknown source 'magic'" in result.output
