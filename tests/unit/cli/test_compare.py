"""``promptopt compare``: the issue's command on the toy task with fake:echo, re-running it, and bad input (exit 2, one
line naming the option)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from promptopt.cli.app import app
from promptopt.run.result import OptimizationResult
from promptopt.testing import write_toy_task

runner = CliRunner()


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def toy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    write_toy_task(tmp_path / "toy")
    return "toy"


def issue_command(task: str, *extra: str) -> list[str]:
    base = ["--model", "fake:echo", "--optimizers", "baseline,ape,opro", "--budget-calls", "60", "--out", "cmp"]
    return ["compare", "--task", task, *base, *extra]


def test_the_issues_command_on_the_toy_task(toy: str) -> None:
    code, out, err = run(*issue_command(toy))
    assert code == 0, err
    assert "[1/3] baseline-seed0: running" in err and "[3/3] opro-seed0: running" in err
    assert "wrote cmp/leaderboard.json, cmp/leaderboard.csv, cmp/compare.json" in out.replace("\n", "")
    for name in ("baseline", "ape", "opro"):
        assert name in out
    board = json.loads(Path("cmp/leaderboard.json").read_text())
    assert sorted(r["optimizer"] for r in board["rows"]) == ["ape", "baseline", "opro"]
    for row in board["rows"]:
        result = OptimizationResult.load(Path("cmp") / row["runs"][0]["run_dir"])
        assert result.best_test is not None and row["test_mean"] == result.best_test["mean"]
        assert result.usage["total"]["calls"] - result.usage["by_role"]["report"]["calls"] <= 60
    assert Path("cmp/leaderboard.csv").is_file()
    cfg = json.loads(Path("cmp/compare.json").read_text())
    assert cfg["provenance"]["command"].startswith("promptopt ")
    assert cfg["settings"]["task"] == "toy" and cfg["settings"]["model"] == "fake:echo"

    code, out, err = run(*issue_command(toy, "--json"))  # again: every run finished, skipped
    assert code == 0, err
    assert err.count("finished earlier, skipped") == 3
    assert json.loads(out)["rows"] == json.loads(Path("cmp/leaderboard.json").read_text())["rows"]


def test_seeds_option(toy: str) -> None:
    args = ["compare", "--task", toy, "--model", "fake:echo", "--optimizers", "baseline", "--budget-calls", "60"]
    code, out, err = run(*args, "--seeds", "1,2", "--out", "cmp")
    assert code == 0, err
    assert "mean of 2 seeds" in out
    assert sorted(p.name for p in Path("cmp/runs").iterdir()) == ["baseline-seed1", "baseline-seed2"]


def one_line_error(args: list[str], *needles: str) -> None:
    code, _, err = run(*args)
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.mark.parametrize(
    ("optimizers", "needle"),
    [("baseline,nope", "nope"), ("", "at least one"), ("ape,baseline,ape", "duplicate optimizer ape")],
)
def test_bad_optimizer_lists_exit_2_naming_the_option(toy: str, optimizers: str, needle: str) -> None:
    args = ["compare", "--task", toy, "--model", "fake:echo", "--optimizers", optimizers, "--budget-calls", "60"]
    one_line_error([*args, "--out", "cmp"], "--optimizers", needle)
    assert not Path("cmp").exists()


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--seeds", "1,x"], "--seeds"),
        (["--seeds", "1,1"], "--seeds"),
        (["--budget-calls", "5"], "--budget-calls"),
    ],
)
def test_bad_options_exit_2(toy: str, extra: list[str], option: str) -> None:
    one_line_error(issue_command(toy, *extra), option)


def test_budget_calls_is_required(toy: str) -> None:
    one_line_error(
        ["compare", "--task", toy, "--model", "fake:echo", "--optimizers", "ape", "--out", "cmp"], "--budget-calls"
    )


def test_other_settings_in_an_existing_out_dir_exit_2(toy: str) -> None:
    assert run(*issue_command(toy))[0] == 0
    one_line_error(issue_command(toy, "--seeds", "0,1"), "other settings", "seeds")
    one_line_error(issue_command(toy, "--budget-calls", "80"), "other settings", "budget")


def test_from_a_real_process(toy: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "promptopt.cli", *issue_command(toy, "--optimizers", "baseline", "--json")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["leader"] == "baseline"
