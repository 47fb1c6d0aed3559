"""``gradient_text`` on the tiny random Llama: budget accounting of gradient passes, exportable text, free tokens,
the reasoning loss, and the refusal of a model that cannot be trained."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import promptopt
from promptopt import Budget, ConfigError, Example, FakeModel, make_task
from promptopt.models.hf import HFModel
from promptopt.models.hf.vocab import encode_text, round_trips
from promptopt.optimizers.gradient_text import GradientTextOptimizer
from promptopt.testing.contract_cases import TINY_GRADIENT_TEXT, animal_task, tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> HFModel:
    model = tiny_model(tmp_path_factory.mktemp("tiny"))
    assert isinstance(model, HFModel)
    return model


def steps_of(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted((run_dir / "gradient_text").glob("step-*.json"))]


def test_gradient_passes_are_train_calls_per_example(tiny: HFModel, tmp_path: Path) -> None:
    opt = GradientTextOptimizer(**TINY_GRADIENT_TEXT)
    result = promptopt.optimize(animal_task(), opt, tiny, budget=Budget(max_calls=70), cache=False,
                                run_dir=tmp_path / "run", evaluate_test=False)  # fmt: skip
    steps = steps_of(tmp_path / "run")
    train = result.usage["by_role"]["train"]
    assert steps and train["calls"] == 4 * len(steps)  # batch_size examples per gradient pass
    assert train["prompt_tokens"] > 0
    limited = sum(result.usage["by_role"].get(r, {}).get("calls", 0) for r in ("task", "train", "proposer"))
    assert limited <= 70
    for step in steps:  # every candidate is a single-token swap of the span the step's gradient was taken at
        for candidate in step["candidates"]:
            assert sum(a != b for a, b in zip(step["ids"], candidate, strict=True)) == 1
    best = result.best_prompt.instruction
    assert round_trips(tiny.tokenizer, encode_text(tiny.tokenizer, best))  # the exported text is the tokens


def test_free_tokens_leave_the_instruction_alone(tiny: HFModel, tmp_path: Path) -> None:
    opt = GradientTextOptimizer(**{**TINY_GRADIENT_TEXT, "edit_instruction": False, "n_free": 2})
    result = promptopt.optimize(animal_task(), opt, tiny, budget=Budget(max_calls=90), cache=False,
                                run_dir=tmp_path / "run", evaluate_test=False)  # fmt: skip
    own = len(encode_text(tiny.tokenizer, animal_task().instruction))
    steps = steps_of(tmp_path / "run")
    assert steps and all(len(s["ids"]) == own + 2 for s in steps)
    for step in steps:
        for candidate in step["candidates"]:
            assert candidate[:own] == step["ids"][:own]
    assert result.best_prompt.instruction.startswith(animal_task().instruction)


def test_reasoning_pays_the_generated_reasoning_as_train_calls(tiny: HFModel, tmp_path: Path) -> None:
    """GReaTer on a generation task: per example one generation (its reasoning) and one gradient row."""
    words = ["cat", "dog", "bird", "fish", "red", "blue", "green", "pink"]
    exs = [Example(id=w, inputs={"word": w}, target=w) for w in words]
    task = make_task(name="echo", template="{{ instruction }}\nWord: {{ word }}", instruction="Say the word.",
                     train=exs, dev=exs, test=exs)  # fmt: skip
    settings = {**TINY_GRADIENT_TEXT, "reasoning": True, "reasoning_tokens": 4, "steps": 1}
    result = promptopt.optimize(task, GradientTextOptimizer(**settings), tiny, budget=Budget(max_calls=60),
                                cache=False, run_dir=tmp_path / "run", evaluate_test=False)  # fmt: skip
    train = result.usage["by_role"]["train"]
    assert len(steps_of(tmp_path / "run")) == 1
    assert train["calls"] == 2 * 4 and train["completion_tokens"] > 0


def test_a_model_that_cannot_be_trained_is_refused() -> None:
    with pytest.raises(ConfigError, match="--model smollm2"):
        promptopt.optimize(animal_task(), "gradient_text", FakeModel(), budget=Budget(max_calls=100), cache=False)


def test_nothing_to_optimize_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="n_free"):
        GradientTextOptimizer(edit_instruction=False, n_free=0)
