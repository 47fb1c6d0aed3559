"""``result.trials`` (plain frozen rows, saved in result.json, old files still load), ``result.trials_frame()`` and
the typed ``result.spend`` shown by ``result.format()``."""

from __future__ import annotations

import dataclasses
import json
import sys
import types
from typing import Any

import pytest

from promptopt import MissingDependencyError, OptimizationResult, load_optimizer, optimize
from promptopt.run.result import TRIAL_COLUMNS, RoleSpend, Spend, TrialSummary
from promptopt.testing import TOY_BEST_INSTRUCTION, TOY_PARTIAL_INSTRUCTION, toy_model

PROPOSALS = ["Say the word.", TOY_PARTIAL_INSTRUCTION, "Write the word out.", TOY_BEST_INSTRUCTION]


@pytest.fixture
def ape_result(toy_task, tmp_path) -> OptimizationResult:
    opt = load_optimizer("ape", n_prompts=4, minibatch_size=6, top_k=2, resample_rounds=0)
    return optimize(toy_task, opt, toy_model(PROPOSALS), cache=":memory:", run_dir=tmp_path / "run")


def test_the_result_carries_every_trial_as_plain_frozen_data(ape_result):
    trials = ape_result.trials
    assert isinstance(trials, tuple) and len(trials) == ape_result.n_trials > 1
    assert [t.trial for t in trials] == list(range(len(trials)))
    seed = trials[0]
    assert seed.prompt_id == ape_result.seed_prompt.id and seed.full and seed.status == "complete"
    assert seed.instruction == ape_result.seed_prompt.instruction
    assert seed.mean == pytest.approx(ape_result.baseline_dev["mean"])
    assert (seed.ci_low, seed.ci_high, seed.n) == (
        ape_result.baseline_dev["ci_low"],
        ape_result.baseline_dev["ci_high"],
        ape_result.baseline_dev["n"],
    )
    assert {t.kind for t in trials} == {"full", "minibatch"}  # APE screens on minibatches, confirms on full dev
    assert all(t.n == 6 for t in trials if not t.full)
    calls = [t.calls_so_far for t in trials]
    assert calls == sorted(calls) and calls[-1] > 0
    assert any(t.prompt_id == ape_result.best_prompt.id and t.full for t in trials)
    with pytest.raises(dataclasses.FrozenInstanceError):
        seed.mean = 1.0  # type: ignore[misc]


def test_trials_are_saved_in_result_json_and_load_back(ape_result, tmp_path):
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert len(saved["trials"]) == ape_result.n_trials
    assert saved["trials"][0]["kind"] == "full"
    loaded = OptimizationResult.load(tmp_path / "run")
    assert loaded.trials == ape_result.trials
    assert loaded == OptimizationResult.from_dict(ape_result.to_dict())


def test_an_old_result_json_without_trials_still_loads(ape_result, tmp_path):
    old = ape_result.to_dict()
    del old["trials"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    loaded = OptimizationResult.load(path)
    assert loaded.trials == ()
    assert loaded.best_prompt == ape_result.best_prompt
    assert loaded.spend == ape_result.spend


def test_a_failed_trial_has_no_score():
    row = TrialSummary(
        trial=3, step=1, prompt_id="p", instruction="x", full=True, status="failed", mean=None, ci_low=None,
        ci_high=None, n=0, calls_so_far=7, error="template does not render",
    )  # fmt: skip
    assert TrialSummary.from_dict(json.loads(json.dumps(row.to_dict()))) == row


def test_trials_frame_without_pandas_is_a_missing_dependency_error(ape_result, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas -> ImportError
    with pytest.raises(MissingDependencyError, match=r"needs pandas.*pip install pandas"):
        ape_result.trials_frame()


def test_trials_frame_builds_one_row_per_trial(ape_result, monkeypatch):
    built: dict[str, Any] = {}

    def data_frame(rows: list[dict[str, Any]], columns: list[str]) -> str:
        built.update(rows=rows, columns=columns)
        return "frame"

    monkeypatch.setitem(sys.modules, "pandas", types.SimpleNamespace(DataFrame=data_frame))
    assert ape_result.trials_frame() == "frame"
    assert built["columns"] == list(TRIAL_COLUMNS)
    assert built["rows"] == [t.to_dict() for t in ape_result.trials]
    assert set(built["rows"][0]) == set(TRIAL_COLUMNS)


def test_trials_frame_with_real_pandas(ape_result):
    pd = pytest.importorskip("pandas")
    frame = ape_result.trials_frame()
    assert isinstance(frame, pd.DataFrame) and len(frame) == ape_result.n_trials
    assert list(frame.columns) == list(TRIAL_COLUMNS)


def test_spend_is_typed_and_matches_the_usage_dict(ape_result):
    spend = ape_result.spend
    usage = ape_result.usage
    assert isinstance(spend, Spend)
    assert spend.calls == usage["total"]["calls"] > 0
    assert spend.tokens == usage["total"]["tokens"]
    assert spend.cache_hits == usage["total"]["cache_hits"]
    assert spend.cost == usage["total"]["cost"]
    assert spend.seconds == usage["elapsed_seconds"]
    assert set(spend.by_role) == set(usage["by_role"]) >= {"task", "proposer", "report"}
    assert all(isinstance(r, RoleSpend) for r in spend.by_role.values())
    assert spend.search_calls == spend.calls_of("task", "proposer", "train")
    assert spend.test_calls == usage["by_role"]["report"]["calls"]
    assert spend.search_calls + spend.test_calls == spend.calls
    assert spend.calls_of("no-such-role") == 0


def test_format_shows_the_spend(ape_result):
    spend = ape_result.spend
    text = ape_result.format()
    assert f"spent: {spend.search_calls} search calls (task model {spend.calls_of('task')}" in text
    assert f"+ {spend.test_calls} held-out test calls; {spend.tokens} tokens, ${spend.cost:.4f}" in text
    assert f"{ape_result.n_trials} trials; stopped:" in text


def test_spend_of_an_empty_usage_is_zero():
    spend = Spend.from_usage({})
    assert (spend.calls, spend.tokens, spend.cost, spend.seconds, dict(spend.by_role)) == (0, 0, 0.0, 0.0, {})
    assert "0 search calls" in spend.format()
