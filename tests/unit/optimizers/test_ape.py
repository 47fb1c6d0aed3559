"""APE's budget plan: confirmations reserved before each screening, proposals shrunk to what the rest pays for,
a resample round skipped when not even one candidate fits, and budgets below ``min_calls`` refused up front.

(The happy path — APE finds the toy optimum, with its lineage — is in tests/unit/run/test_runner.py.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import promptopt
from promptopt import Budget, ConfigError, OptimizationResult, load_optimizer
from promptopt.core.task import Task
from promptopt.models.fake import FakeModel
from promptopt.optimizers import APEOptimizer
from promptopt.run.callbacks import TrialFinished
from promptopt.run.history import History
from promptopt.testing import (
    TOY_BEST_INSTRUCTION,
    TOY_PARTIAL_INSTRUCTION,
    TOY_SEED_INSTRUCTION,
    make_toy_task,
    scripted_proposer,
    toy_model,
)

SCRIPT = [
    TOY_PARTIAL_INSTRUCTION,  # 1: induced, better than the seed
    "Say the word.",  # 2
    "Write the word out.",  # 3
    TOY_SEED_INSTRUCTION,  # 4: a duplicate of the seed (rejected)
    TOY_BEST_INSTRUCTION,  # 5: the first paraphrase (of the best so far) -> the optimum
    "Reverse this word.",  # 6
    "Spell the word.",  # 7
    "Repeat the word, please.",  # 8
]
"""The proposer's replies by sample index; unlike test_runner's script, the first one is a usable candidate."""

SEED_COST = 12  # the toy dev split


def ape(**overrides: Any) -> APEOptimizer:
    """4 inductions raced on one 6-example stage (toy dev: 12), top 2 confirmed, one round of 2 paraphrases each."""
    settings = {"n_prompts": 4, "minibatch_size": 6, "top_k": 2, "resample_rounds": 1, "n_resample": 2, **overrides}
    opt = load_optimizer("ape", **settings)
    assert isinstance(opt, APEOptimizer)
    return opt


def go(
    budget: int | None,
    *,
    task: Task | None = None,
    opt: APEOptimizer | None = None,
    proposer: FakeModel | None = None,
    **kwargs: Any,
) -> tuple[OptimizationResult, FakeModel, FakeModel]:
    model, proposer = toy_model(), proposer or scripted_proposer(SCRIPT)
    kwargs.setdefault("cache", False)
    kwargs.setdefault("select", "best")  # these tests are about the budget plan, not the selection rule
    result = promptopt.optimize(
        task or make_toy_task(),
        opt or ape(),
        model,
        proposer=proposer,
        budget=Budget(max_calls=budget) if budget else None,
        evaluate_test=False,
        **kwargs,
    )
    return result, model, proposer


def search_calls(result: OptimizationResult) -> int:
    return sum(result.usage["by_role"].get(role, {}).get("calls", 0) for role in ("task", "proposer"))


def test_min_calls_is_the_induction_one_race_and_one_confirmation() -> None:
    task = make_toy_task()
    assert ape().min_calls(task) == 4 + 6 + 12  # n_prompts + the race's last stage + full dev
    staged = make_toy_task(n_train=4, n_dev=24, n_test=2)
    assert ape(minibatch_size=5).min_calls(staged) == 4 + 20 + 24  # stages 5, 10, 20: the worst case runs all
    # dev too small to race on: a candidate's full-dev evaluation is its screening and its confirmation
    assert ape(minibatch_size=12).min_calls(task) == 4 + 12


def test_a_budget_below_min_calls_is_refused_before_any_call() -> None:
    need = SEED_COST + ape().min_calls(make_toy_task())
    model, proposer = toy_model(), scripted_proposer(SCRIPT)
    with pytest.raises(ConfigError, match=rf"--budget-calls {need}\b"):
        promptopt.optimize(
            make_toy_task(), ape(), model, proposer=proposer, budget=Budget(max_calls=need - 1), cache=False
        )
    assert model.requests == [] and proposer.requests == []


def test_the_smallest_budget_still_confirms_a_candidate_on_full_dev() -> None:
    """Seed + min_calls: the induction is shrunk to one proposal, raced and confirmed; the resample round,
    which cannot pay for another candidate, is skipped."""
    budget = SEED_COST + ape().min_calls(make_toy_task())
    result, _, proposer = go(budget)
    assert len(proposer.requests) == 1
    assert result.search == {"screened": 1, "confirmed": 1}
    assert result.best_prompt.instruction == TOY_PARTIAL_INSTRUCTION and result.best_dev["n"] == 12
    assert result.stop_reason.startswith("budget planned out: ") and "call budget spent" not in result.stop_reason
    assert search_calls(result) <= budget


@pytest.mark.parametrize("budget", range(34, 111, 4))
def test_every_budget_ends_with_its_screened_candidates_confirmed(budget: int) -> None:
    """Whatever the budget, the run is never cut short by it: the top candidates of every race are confirmed."""
    result, _, _ = go(budget)
    assert search_calls(result) <= budget
    assert "call budget spent" not in result.stop_reason
    assert result.search["confirmed"] >= 1
    assert result.best_prompt.instruction != TOY_SEED_INSTRUCTION


def test_shrinking_keeps_the_confirmations_and_shares_paraphrases_out() -> None:
    """Budget 96: the induction fits whole (4 proposals, 3 kept: planned 12 + 4 + 3x6 + 2x12 = 58); the resample
    round can pay for 2 of its 4 paraphrases (2 x (1 + 6) + 2 x 12 = 38): one per parent, the best parent's
    first — which is the optimum."""
    result, _, proposer = go(96)
    assert len(proposer.requests) == 4 + 2
    assert [r.sample for r in proposer.requests] == [1, 2, 3, 4, 5, 6]
    paraphrased = [r.messages[-1].content for r in proposer.requests[4:]]
    assert TOY_PARTIAL_INSTRUCTION in paraphrased[0] and TOY_SEED_INSTRUCTION in paraphrased[1]
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION
    assert result.search == {"screened": 5, "confirmed": 4}
    assert result.stop_reason == "optimizer finished" and search_calls(result) == 96


def test_a_budget_that_is_enough_changes_nothing(tmp_path: Path) -> None:
    """The full run plans 110 calls: with exactly that budget it runs as without a call limit."""
    free, _, free_proposer = go(None, run_dir=tmp_path / "free")
    tight, _, tight_proposer = go(110, run_dir=tmp_path / "tight")
    assert search_calls(free) == 110
    assert len(free_proposer.requests) == len(tight_proposer.requests) == 8

    def essence(run_dir: Path) -> list[tuple]:
        return [(r.trial, r.full, r.prompt.id, r.result.scores) for r in History.load(run_dir / "history.jsonl")]

    assert essence(tmp_path / "tight") == essence(tmp_path / "free")
    assert tight.stop_reason == free.stop_reason == "optimizer finished"


def test_no_race_plans_the_full_dev_evaluations() -> None:
    """Dev too small to race on (minibatch >= dev): candidates go straight to full dev, as many as fit."""
    task = make_toy_task(n_dev=6)
    opt = ape(minibatch_size=6)
    budget = 6 + opt.min_calls(task) + 7  # the seed, the minimum (4 + 6), one more candidate (1 + 6)
    result, _, proposer = go(budget, task=task, opt=opt)
    assert len(proposer.requests) == 2
    assert result.search == {"screened": 0, "confirmed": 2}
    assert search_calls(result) <= budget and result.stop_reason.startswith("budget planned out")


def test_races_over_several_stages_are_planned_for_their_worst_case() -> None:
    task = make_toy_task(n_train=4, n_dev=24, n_test=2)
    opt = ape(minibatch_size=5, race_alpha=0.2)  # stages 5, 10, 20
    need = 24 + opt.min_calls(task)
    for budget in (need, need + 15, need + 40):
        result, _, _ = go(budget, task=task, opt=ape(minibatch_size=5, race_alpha=0.2))
        assert search_calls(result) <= budget and "call budget spent" not in result.stop_reason
        assert result.search["confirmed"] >= 1


def test_a_tight_plan_replays_identically_on_resume(tmp_path: Path) -> None:
    """Plans count planned calls (cache hits included), so a run interrupted and resumed with the same budget
    makes the same plans as one that was never interrupted, and pays the same."""
    budget = 80

    def run(run_dir: Path, cache: Path, **kwargs: Any) -> OptimizationResult:
        result, _, _ = go(budget, run_dir=run_dir, cache=cache, **kwargs)
        return result

    straight = run(tmp_path / "straight", tmp_path / "s.sqlite")

    def interrupt(event: object) -> None:
        if isinstance(event, TrialFinished) and event.record.trial == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", tmp_path / "r.sqlite", callbacks=[interrupt])
    resumed = run(tmp_path / "resumed", tmp_path / "r.sqlite", resume=True)

    def essence(run_dir: Path) -> list[tuple]:
        return [(r.trial, r.full, r.prompt.id, r.result.scores) for r in History.load(run_dir / "history.jsonl")]

    assert essence(tmp_path / "resumed") == essence(tmp_path / "straight")
    assert resumed.best_prompt == straight.best_prompt and resumed.search == straight.search
    assert resumed.stop_reason == straight.stop_reason
    assert search_calls(resumed) == search_calls(straight) <= budget
