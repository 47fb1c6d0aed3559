"""The label-free ``unsupervised`` optimizer on the separable toy task with the in-context fake learner."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

import promptopt
from promptopt import testing
from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError
from promptopt.core.task import Task
from promptopt.evaluation.evaluator import EvalResult, Evaluator, ExampleRecord
from promptopt.models.budget import Budget, BudgetTracker
from promptopt.models.client import ModelClient
from promptopt.optimizers.pseudo_labels import balanced_demos, distribution, pseudo_label
from promptopt.run.result import OptimizationResult
from promptopt.testing.unlabeled import LABELS, icl_model, separable_task, truth


def run(task: Task, mode: Literal["auto", "score", "generate"] = "auto", **settings: object) -> OptimizationResult:
    opt = promptopt.load_optimizer("unsupervised", **settings)
    return promptopt.optimize(task, opt, icl_model(), budget=Budget(max_calls=2000), cache=False, mode=mode)


@pytest.mark.parametrize("mode", ["score", "generate"])
def test_pseudo_label_loop_converges_to_the_true_labels(mode: Literal["score", "generate"]) -> None:
    task = separable_task()
    result = run(task, mode)
    assert result.stop_reason == "pseudo-labels converged"
    rounds = result.notes
    assert "yes 15, no 5" in rounds[0]  # the seed prompt calls the unknown colours animals
    assert "5 changed" in rounds[1] and "0 changed" in rounds[2]
    # the final prompt's pseudo-labels of every train input are the true labels (read here, never by the run)
    final = result.best_prompt
    assert final.demos and all(d.answer == truth(d.inputs["word"]) for d in final.demos)
    evaluator = Evaluator(task, ModelClient(icl_model(), cache=None, budget=BudgetTracker()), mode=mode)
    pseudo = pseudo_label(task.train, evaluator.evaluate(final, task.train), LABELS, task.parser, per_label=3)
    assert pseudo.labels == {ex.id: truth(ex.inputs["word"]) for ex in task.train}
    assert result.best_test is not None and result.best_test["mean"] == 1.0
    assert result.baseline_test is not None and result.baseline_test["mean"] < 1.0
    assert result.selection.startswith("chosen by the optimizer without dev labels")


def test_dev_and_train_labels_are_never_read() -> None:
    """Train has no targets at all; flipping every dev target changes the reported dev score, nothing else."""
    task = separable_task()
    assert all(ex.target is None for ex in task.train)
    flip = {"yes": "no", "no": "yes"}
    flipped = dataclasses.replace(
        task, splits={**task.splits, "dev": tuple(dataclasses.replace(ex, target=flip[ex.answer]) for ex in task.dev)}
    )
    a, b = run(task), run(flipped)
    assert a.best_prompt.id == b.best_prompt.id
    assert [t.prompt_id for t in a.trials] == [t.prompt_id for t in b.trials]
    assert a.best_dev["mean"] == pytest.approx(1 - b.best_dev["mean"])


def test_pseudo_labels_are_class_balanced_under_a_biased_model() -> None:
    """A model that says "yes" to everything, a little less surely to colours: calibration still splits the pool,
    and the confident set has the same number per label."""
    pool = [Example(id=w, inputs={"word": w}) for w in ("cat", "dog", "cow", "fox", "red", "tan")]
    lean = {"cat": -0.1, "dog": -0.2, "cow": -0.3, "fox": -0.35, "red": -0.9, "tan": -0.8}
    records = tuple(
        ExampleRecord(example_id=w, prediction="yes", score=0.0, label_logprobs=(lean[w], -1.0)) for w in lean
    )
    result = EvalResult(prompt_id="p", split="train", mode="score", records=records)
    pseudo = pseudo_label(pool, result, LABELS, testing.make_toy_task().parser, per_label=5)
    assert [r.prediction for r in records].count("yes") == 6  # raw argmax: one label swallows the pool
    assert pseudo.labels == {"cat": "yes", "dog": "yes", "cow": "yes", "fox": "yes", "red": "no", "tan": "no"}
    labels = [ex.answer for ex in pseudo.selected]
    assert labels.count("yes") == labels.count("no") == 2  # 4 "yes" pseudo-labels, but only 2 "no" to match
    assert [ex.id for ex in pseudo.selected[:2]] == ["cat", "red"]  # round-robin, most confident first
    demos = balanced_demos(pseudo.selected, 4, 1, "0")
    assert sorted(d.answer for d in demos) == ["no", "no", "yes", "yes"]


def test_distribution_from_sampled_answers() -> None:
    record = ExampleRecord(example_id="x", prediction="yes", score=0.0, raw="yes | no | yes | ??")
    parser = separable_task().parser
    assert distribution(record, LABELS, parser) == (2 / 3, 1 / 3)
    greedy = ExampleRecord(example_id="x", prediction="no", score=0.0, raw="no")
    assert distribution(greedy, LABELS, parser) == (0.0, 1.0)


def test_refuses_a_task_without_labels() -> None:
    with pytest.raises(ConfigError, match="not a classification task"):
        promptopt.optimize(testing.make_toy_task(), "unsupervised", testing.toy_model(), cache=False)


@pytest.mark.parametrize("optimizer", ["fewshot", "auto", "ape"])
def test_labeled_optimizers_refuse_unlabeled_train(optimizer: str) -> None:
    with pytest.raises(ConfigError, match=r"unlabeled train examples .* learns from train targets") as err:
        promptopt.optimize(separable_task(), optimizer, icl_model(), cache=False)
    assert err.value.field == "optimizer"


def test_unlabeled_example_answers_name_the_example() -> None:
    with pytest.raises(promptopt.DataError, match="example 'x' is unlabeled"):
        _ = Example(id="x", inputs={"word": "cat"}).answers


def test_instructions_induced_from_pseudo_labeled_examples() -> None:
    """With ``n_instructions`` the proposer writes instructions from the pseudo-labeled demos; they are candidates."""
    induced = "Answer yes if the word names an animal, otherwise no."
    opt = promptopt.load_optimizer("unsupervised", n_instructions=1, shots=[2], n_draws=1, demo_formats=["inline"])
    result = promptopt.optimize(
        separable_task(),
        opt,
        icl_model(),
        proposer=testing.scripted_proposer([induced]),
        budget=Budget(max_calls=2000),
        cache=False,
    )
    instructions = {t.instruction for t in result.trials}
    assert induced in instructions
    assert result.stop_reason == "pseudo-labels converged"
