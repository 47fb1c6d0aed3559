"""The ``dspy`` optimizer end to end on the toy task: DSPy compiles on fake models through promptopt's client, the
common evaluator scores the compiled prompt, the budget counts every call, and parse failures are reported."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.unit.cli.test_cli import run as run_cli

import promptopt
from promptopt.core.candidate import Prompt
from promptopt.core.exceptions import ConfigError
from promptopt.testing import TOY_BEST_INSTRUCTION, make_toy_task, toy_expected_score
from promptopt.testing.contracts import CountingModel, read_history
from promptopt.testing.dspy_fakes import dspy_toy_model

pytest.importorskip("dspy")
TINY = {"candidates": 2, "trials": 2, "demos": 2, "bootstrapped_demos": 2}


def optimize(
    optimizer: str, *, markers: bool = True, calls: int = 300, cache: Path | bool = False, **settings: object
) -> tuple[promptopt.OptimizationResult, CountingModel]:
    model = CountingModel(dspy_toy_model(markers=markers))
    opt, budget = promptopt.load_optimizer(optimizer, **settings), promptopt.Budget(max_calls=calls)
    result = promptopt.optimize(make_toy_task(), opt, model, budget=budget, seed=0, cache=cache)
    return result, model


def test_presets_are_listed() -> None:
    code, out, _ = run_cli("optimizers", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0 and rows["dspy"]["kind"] == "optimizer"
    for name in ("dspy-labeled", "dspy-bootstrap", "dspy-mipro", "dspy-copro", "dspy-gepa"):
        assert rows[name]["optimizer"] == "dspy" and rows[name]["description"]


def test_dspy_labeled_end_to_end_through_the_common_evaluator() -> None:
    result, model = optimize("dspy-labeled", demo_format="inline")  # the toy rule counts demos shown inline only
    task, best = make_toy_task(), result.best_prompt
    assert best.origin == "dspy-labeled" and len(best.demos) == 4 and best.instruction == task.instruction
    assert {d.id for d in best.demos} <= {ex.id for ex in task.train}  # LabeledFewShot: train examples, ids kept
    assert best.template == task.template.source  # scored in the task's own template by promptopt's evaluator
    assert result.best_dev["mean"] == pytest.approx(toy_expected_score(task.instruction, task.dev, n_demos=4))
    assert result.best_test is not None  # the runner's held-out test score, as for every optimizer
    by_role = result.spend.by_role
    assert by_role["task"].calls == 2 * len(task.dev)  # seed + compiled prompt on dev; LabeledFewShot calls nothing
    assert model.calls == result.spend.calls


def test_dspy_mipro_finds_the_proposed_optimum_and_every_call_is_counted() -> None:
    result, model = optimize("dspy-mipro", **TINY)
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION and result.best_dev["mean"] == 1.0
    by_role = result.spend.by_role
    assert by_role["proposer"].calls > 0  # MIPROv2's summaries and instruction proposals: the proposer's role
    assert by_role["task"].calls > 2 * len(make_toy_task().dev)  # DSPy's bootstrapping and trials: the task role
    assert model.calls == result.spend.calls and result.spend.search_calls <= 300
    assert not result.notes  # the fake writes DSPy's markers: nothing failed to parse


def test_a_rerun_with_the_same_cache_costs_no_calls(tmp_path: Path) -> None:
    cache = tmp_path / "cache.sqlite"
    first, _ = optimize("dspy-mipro", cache=cache, **TINY)
    again, model = optimize("dspy-mipro", cache=cache, **TINY)
    assert again.best_prompt.id == first.best_prompt.id and model.calls == 0
    assert again.spend.cache_hits == first.spend.calls + first.spend.cache_hits


@pytest.mark.parametrize("preset", ["dspy-bootstrap", "dspy-mipro", "dspy-copro", "dspy-gepa"])
def test_unparsable_outputs_finish_the_run_and_are_reported(preset: str) -> None:
    result, model = optimize(preset, markers=False, **({"metric_calls": 24} if preset == "dspy-gepa" else TINY))
    task, best = make_toy_task(), result.best_prompt
    assert best.instruction == task.instruction  # no proposal parsed
    assert {d.id for d in best.demos} <= {ex.id for ex in task.train}  # no bootstrapped demo: labeled ones at most
    assert any("parses failed" in n or "compile failed" in n for n in result.notes)
    assert model.calls == result.spend.calls


@pytest.mark.parametrize("preset", ["dspy-bootstrap", "dspy-copro", "dspy-gepa"])
def test_the_other_teleprompters_run_and_score_through_the_evaluator(preset: str) -> None:
    result, _ = optimize(preset, **({"metric_calls": 24} if preset == "dspy-gepa" else TINY))
    seed = result.baseline_dev["mean"]
    assert result.best_dev["mean"] >= seed and result.best_prompt.origin in ("seed", preset)
    if preset != "dspy-bootstrap":  # COPRO and GEPA find the proposed optimum on the toy task
        assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION


def test_a_budget_spent_inside_dspy_ends_the_run_with_the_best_so_far() -> None:
    n_dev = len(make_toy_task().dev)
    result, model = optimize("dspy-mipro", calls=2 * n_dev + 10, **TINY)  # DSPy may spend 10; dev is kept for scoring
    assert result.best_prompt.id == make_toy_task().seed_prompt().id
    assert "kept to score DSPy's program" in result.stop_reason
    assert any("compile stopped" in n for n in result.notes)
    assert result.spend.search_calls <= 2 * n_dev + 10 and model.calls == result.spend.calls


def test_a_budget_below_the_final_evaluation_is_refused_before_any_call() -> None:
    with pytest.raises(ConfigError, match="dspy"):
        optimize("dspy-labeled", calls=len(make_toy_task().dev) * 2 - 1)


def test_compiled_demos_are_shown_as_dspy_shows_them(tmp_path: Path) -> None:
    opt, run_dir = promptopt.load_optimizer("dspy-labeled"), tmp_path / "run"
    promptopt.optimize(make_toy_task(), opt, dspy_toy_model(), cache=False, evaluate_test=False, run_dir=run_dir)
    compiled = [Prompt.from_dict(r["prompt"]) for r in read_history(run_dir)][1:]
    assert len(compiled) == 1 and compiled[0].demo_format == "turns_system" and len(compiled[0].demos) == 4


def test_dspys_logs_go_to_the_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    opt = promptopt.load_optimizer("dspy-bootstrap", **TINY)
    model = dspy_toy_model(markers=False)
    promptopt.optimize(make_toy_task(), opt, model, budget=promptopt.Budget(max_calls=200), run_dir=tmp_path / "run")
    log = (tmp_path / "run" / "dspy.log").read_text(encoding="utf-8")
    assert "Failed to run or to evaluate example" in log and "Bootstrapped 0 full traces" in log
    assert "Bootstrapped" not in capsys.readouterr().out  # DSPy's prints stay out of the run's output


def test_without_the_json_fallback_a_failed_parse_costs_one_call_not_two() -> None:
    with_fallback, _ = optimize("dspy-bootstrap", markers=False, **TINY)
    without, _ = optimize("dspy-bootstrap", markers=False, json_fallback=False, **TINY)
    n_train = len(make_toy_task().train)
    assert with_fallback.spend.by_role["task"].calls - without.spend.by_role["task"].calls == n_train
    assert "JSONAdapter" in with_fallback.notes[0] and "JSONAdapter" not in without.notes[0]
