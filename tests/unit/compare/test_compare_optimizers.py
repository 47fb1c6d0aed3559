"""compare_optimizers on the toy task with fake models: the files it writes and their numbers, seeds, skipping finished
runs, resuming a killed compare, refusing other settings and bad optimizer lists."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from promptopt import Budget, ConfigError, OptimizationResult
from promptopt.compare import CSV_COLUMNS, compare_optimizers
from promptopt.core.stats import paired_comparison
from promptopt.evaluation.evaluator import EvalResult
from promptopt.run.callbacks import TrialFinished
from promptopt.testing import (
    TOY_BEST_INSTRUCTION,
    TOY_PARTIAL_INSTRUCTION,
    TOY_SEED_INSTRUCTION,
    toy_model,
    write_toy_task,
)

SCRIPT = [TOY_SEED_INSTRUCTION, "Say the word.", TOY_PARTIAL_INSTRUCTION, TOY_BEST_INSTRUCTION, "Spell the word."]
OPTIMIZERS = ["baseline", "ape", "opro"]
BUDGET = Budget(max_calls=60)


def run_compare(task: Path, out: Path, *, seeds: tuple[int, ...] = (0,), **kwargs: Any) -> dict[str, Any]:
    kwargs.setdefault("model", toy_model(SCRIPT))
    return compare_optimizers(task, kwargs.pop("optimizers", OPTIMIZERS), budget=BUDGET, seeds=seeds, out=out, **kwargs)


@pytest.fixture
def task(tmp_path: Path) -> Path:
    return write_toy_task(tmp_path / "toy")


def best_records(run_dir: Path) -> EvalResult:
    return EvalResult.from_dict(json.loads((run_dir / "test_results.json").read_text())["best"])


def test_three_optimizers_write_the_three_files_with_the_runs_numbers(task: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    board = run_compare(task, out)
    assert json.loads((out / "leaderboard.json").read_text()) == board
    assert board["format"] == "promptopt.leaderboard/1" and board["task"] == "toy" and board["n_test"] == 12
    rows = {r["optimizer"]: r for r in board["rows"]}
    assert sorted(rows) == sorted(OPTIMIZERS)
    assert [r["rank"] for r in board["rows"]] == [1, 2, 3]
    means = [r["test_mean"] for r in board["rows"]]
    assert means == sorted(means, reverse=True)
    assert board["leader"] == board["rows"][0]["optimizer"]
    assert rows["ape"]["test_mean"] > rows["baseline"]["test_mean"]  # the script leads APE to a better instruction

    leader = best_records(out / "runs" / f"{board['leader']}-seed0")
    for name, row in rows.items():
        run_dir = out / "runs" / f"{name}-seed0"
        result = OptimizationResult.load(run_dir)
        assert result.best_test is not None
        assert (row["test_mean"], row["test_ci_low"], row["test_ci_high"]) == (
            result.best_test["mean"],
            result.best_test["ci_low"],
            result.best_test["ci_high"],
        )
        assert row["vs_seed"] == result.test_comparison  # one seed: exactly the run's paired test comparison
        assert row["vs_seed"]["method"] == "newcombe"
        assert row["calls"] == result.usage["total"]["calls"] and row["tokens"] == result.usage["total"]["tokens"]
        assert row["runs"][0]["run_dir"] == f"runs/{name}-seed0" and row["n_seeds"] == 1 and row["test_sd"] == 0
        mine = best_records(run_dir)
        if name == board["leader"]:
            assert row["vs_leader"] is None
        else:
            assert row["vs_leader"] == paired_comparison(leader.scores, mine.scores).to_dict()
    assert rows["baseline"]["vs_seed"]["diff"] == 0

    with (out / "leaderboard.csv").open() as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == CSV_COLUMNS
    assert [r["optimizer"] for r in table] == [r["optimizer"] for r in board["rows"]]
    assert [float(r["test_mean"]) for r in table] == means
    assert table[0]["vs_leader_diff"] == ""

    cfg = json.loads((out / "compare.json").read_text())
    assert cfg["format"] == "promptopt.compare/1" and cfg["leaderboard"] == "leaderboard.json"
    assert cfg["settings"]["optimizers"] == OPTIMIZERS and cfg["settings"]["budget"]["max_calls"] == 60
    assert cfg["settings"]["model"] == cfg["settings"]["proposer"] == "fake:toy"
    assert {"promptopt", "commit", "command", "python", "versions"} <= set(cfg["provenance"])
    saved = json.loads((out / "leaderboard.json").read_text())
    assert saved["provenance"]["commit"] == cfg["provenance"]["commit"]  # the leaderboard says what made it
    assert saved["provenance"]["versions"]["python"] == cfg["provenance"]["python"]
    assert [(r["optimizer"], r["run_dir"], r["status"]) for r in cfg["runs"]] == [
        (n, f"runs/{n}-seed0", "finished") for n in OPTIMIZERS
    ]
    caches = {r["cache"] for r in cfg["runs"]}
    assert len(caches) == 3 and all((out / c).is_file() for c in caches)  # every run its own cold cache


def test_seeds_aggregate_over_runs(task: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    board = run_compare(task, out, seeds=(1, 2), optimizers=["baseline", "ape"])
    for row in board["rows"]:
        assert row["n_seeds"] == 2 and [r["seed"] for r in row["runs"]] == [1, 2]
        per_seed = [OptimizationResult.load(out / r["run_dir"]) for r in row["runs"]]
        assert [r.seed for r in per_seed] == [1, 2]
        means = [r.best_test["mean"] for r in per_seed if r.best_test is not None]
        assert row["test_mean"] == pytest.approx(sum(means) / 2)
        assert (row["test_min"], row["test_max"]) == (min(means), max(means))
        assert row["calls"] == pytest.approx(sum(r.usage["total"]["calls"] for r in per_seed) / 2)
    cfg = json.loads((out / "compare.json").read_text())
    assert [r["run_dir"] for r in cfg["runs"]] == [
        "runs/baseline-seed1",
        "runs/baseline-seed2",
        "runs/ape-seed1",
        "runs/ape-seed2",
    ]


def test_rerun_skips_finished_runs_without_model_calls(task: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    first = run_compare(task, out)
    model = toy_model(SCRIPT)
    states: list[tuple[str, str]] = []
    again = run_compare(task, out, model=model, on_run=lambda spec, state, i, n: states.append((spec.name, state)))
    assert model.requests == []
    assert states == [(f"{n}-seed0", "skip") for n in OPTIMIZERS]
    strip = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in strip and k != "runs"} for r in again["rows"]] == [
        {k: v for k, v in r.items() if k not in strip and k != "runs"} for r in first["rows"]
    ]


def test_killed_compare_resumes(task: Path, tmp_path: Path) -> None:
    whole = run_compare(task, tmp_path / "whole")
    out = tmp_path / "cmp"

    def kill(event: object) -> None:
        if isinstance(event, TrialFinished) and event.record.trial >= 2:
            raise KeyboardInterrupt  # APE (the 2nd run) is killed after its seed trial and one more

    with pytest.raises(KeyboardInterrupt):
        run_compare(task, out, callbacks=[kill])
    cfg = json.loads((out / "compare.json").read_text())
    assert [r["status"] for r in cfg["runs"]] == ["finished", "pending", "pending"] and cfg["leaderboard"] is None
    assert (out / "runs/ape-seed0/config.json").is_file() and not (out / "runs/ape-seed0/result.json").exists()
    assert not (out / "leaderboard.json").exists()

    states: list[str] = []
    board = run_compare(task, out, on_run=lambda spec, state, i, n: states.append(state))
    assert states == ["skip", "resume", "start"]
    assert [(r["optimizer"], r["test_mean"]) for r in board["rows"]] == [
        (r["optimizer"], r["test_mean"]) for r in whole["rows"]
    ]
    assert [r["status"] for r in json.loads((out / "compare.json").read_text())["runs"]] == ["finished"] * 3


@pytest.mark.parametrize(
    "change",
    [
        {"optimizers": ["baseline", "ape"]},
        {"seeds": (0, 1)},
        {"model": toy_model(SCRIPT, name="fake:other")},
    ],
)
def test_other_settings_in_the_same_out_dir_are_refused(task: Path, tmp_path: Path, change: dict[str, Any]) -> None:
    out = tmp_path / "cmp"
    run_compare(task, out, optimizers=["baseline"])
    kwargs = {"optimizers": ["baseline"], **change}
    with pytest.raises(ConfigError, match="other settings"):
        run_compare(task, out, **kwargs)


def test_a_directory_that_is_not_a_compare_is_refused(task: Path, tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="not empty") as exc:
        run_compare(task, out)
    assert exc.value.field == "out"


@pytest.mark.parametrize(
    ("optimizers", "needle"),
    [([], "at least one"), (["baseline", ""], "at least one"), (["ape", "ape"], "duplicate"), (["nope"], "nope")],
)
def test_bad_optimizer_lists_name_the_argument(task: Path, tmp_path: Path, optimizers: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle) as exc:
        run_compare(task, tmp_path / "cmp", optimizers=optimizers)
    assert exc.value.field == "optimizers"
    assert not (tmp_path / "cmp").exists()  # refused before anything is written or spent
