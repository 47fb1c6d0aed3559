"""structure_search's ``robust`` objective over rule-based paraphrases of each candidate's instruction."""

from __future__ import annotations

import pytest

import promptopt
from promptopt.optimizers.presets import load_optimizer
from promptopt.run.history import History
from promptopt.testing import TOY_BEST_INSTRUCTION, TOY_PARTIAL_INSTRUCTION, make_toy_task, toy_model

pytest.importorskip("optuna")


@pytest.mark.parametrize("objective", ["mean", "worst"])
def test_structure_search_scores_each_trial_over_paraphrases(tmp_run_dir, objective: str) -> None:
    settings = {"n_trials": 6, "minibatch_size": 6, "full_eval_every": 4, "n_instructions": 3, "shots": [0, 2]}
    opt = load_optimizer(
        "structure_search", **settings, robust=objective, robust_over="paraphrases", n_robust_formats=3
    )
    proposals = [TOY_PARTIAL_INSTRUCTION, TOY_BEST_INSTRUCTION, "Say the word."]
    promptopt.optimize(make_toy_task(), opt, toy_model(proposals), run_dir=tmp_run_dir, cache=False)
    minibatch = [r for r in History.load(tmp_run_dir / "history.jsonl") if not r.full]
    assert len(minibatch) == 6 * 3
    groups = [minibatch[i : i + 3] for i in range(0, 18, 3)]
    for (first, *others), trial in zip(groups, opt.study.get_trials(), strict=True):
        assert all(o.prompt.origin == "paraphrase" and o.prompt.template == first.prompt.template for o in others)
        assert all(o.prompt.instruction != first.prompt.instruction for o in others)
        means = [first.mean, *(o.mean for o in others)]
        assert trial.value == pytest.approx(sum(means) / 3 if objective == "mean" else min(means))
