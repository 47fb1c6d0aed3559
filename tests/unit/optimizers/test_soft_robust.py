"""The robust soft prompt on the tiny random Llama: the consistency term makes the answer distributions under
equivalent instructions agree, each render is a training call, and the option off trains as before."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

import torch

import promptopt
from promptopt import Budget
from promptopt.models.soft import SoftPromptModel, init_embeddings
from promptopt.optimizers.soft_robust import ParaphraseTraining, consistency
from promptopt.testing.contract_cases import TINY_SOFT_PROMPT, animal_task, tiny_model

INSTRUCTIONS = ("Is it an animal?", "Tell me: is this word an animal? yes or no", "Animal or not?")


def test_consistency_is_zero_for_equal_distributions_and_positive_otherwise() -> None:
    same = torch.log_softmax(torch.tensor([[1.0, 2.0, 0.5]] * 2), -1)
    other = torch.log_softmax(torch.tensor([[1.0, 2.0, 0.5], [3.0, -1.0, 0.0]]), -1)
    assert consistency(same, 2).item() == pytest.approx(0.0, abs=1e-6)
    assert consistency(other, 2).item() > 0.1


def _divergence(tmp_path: Path, weight: float) -> float:
    """The answer-distribution divergence across the three instructions on the train set, after 15 steps."""
    base = tiny_model(tmp_path)
    base.model.requires_grad_(False)
    task = animal_task()
    param = torch.nn.Parameter(init_embeddings(base, 4, "vocab", seed=0))
    model = SoftPromptModel(base, param, tag="t")
    training = ParaphraseTraining(
        task.seed_prompt(), task.train, INSTRUCTIONS[1:], per_example=3, weight=weight, seed=0
    )
    opt = torch.optim.AdamW([param], lr=0.05)
    indices = list(range(len(task.train)))
    for step in range(15):
        opt.zero_grad()
        loss, _, calls = training.loss(model, indices, step, eos=False)
        assert calls == 3 * len(indices)
        loss.backward()
        opt.step()
    with torch.no_grad():
        _, first, _ = model.nll_rows([training.renders[j][i] for i in indices for j in range(3)])
        return float(consistency(first, 3))


def test_the_consistency_term_narrows_the_gap_between_equivalent_instructions(tmp_path: Path) -> None:
    assert _divergence(tmp_path, 5.0) < 0.6 * _divergence(tmp_path, 0.0)


def test_each_render_is_a_training_call_and_the_pool_is_noted(tmp_path: Path) -> None:
    settings = {**TINY_SOFT_PROMPT, "train_instructions": list(INSTRUCTIONS[1:]), "paraphrases_per_example": 2}
    opt = promptopt.load_optimizer("soft_prompt", **settings)
    result = promptopt.optimize(
        animal_task(), opt, tiny_model(tmp_path), budget=Budget(max_calls=200), cache=False, evaluate_test=False
    )
    steps = TINY_SOFT_PROMPT["max_steps"]
    assert result.usage["by_role"]["train"]["calls"] == steps * TINY_SOFT_PROMPT["batch_size"] * 2
    assert any("trained under 3 instructions" in n for n in result.notes)


def test_rule_paraphrases_feed_the_pool_when_none_are_given(tmp_path: Path) -> None:
    task = animal_task()
    opt = promptopt.load_optimizer("soft_prompt", **{**TINY_SOFT_PROMPT, "paraphrases": 3, "max_steps": 2})
    result = promptopt.optimize(task, opt, tiny_model(tmp_path), cache=False, evaluate_test=False)
    assert any("robust soft prompt: trained under" in n for n in result.notes)
