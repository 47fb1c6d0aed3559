"""fewshot and demo chat turns on the embedded SmolLM2 (bounded: 8 dev / 8 test examples, 60 calls)."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

import promptopt
from promptopt.core.taskfile import load_task
from promptopt.run.rundir import readable_history

pytestmark = pytest.mark.integration


def test_fewshot_races_inline_and_turn_demos_and_confirms_the_best(smollm2, tmp_path):
    task = load_task("ii_first_word_letter")
    task = dataclasses.replace(task, splits={"train": task.train[:12], "dev": task.dev[:8], "test": task.test[:8]})
    opt = promptopt.load_optimizer(
        "fewshot", shots=[2], selections=["random"], sources=["labeled"], n_draws=1, minibatch_size=4
    )
    result = promptopt.optimize(
        task, opt, smollm2, budget=promptopt.Budget(max_calls=60), cache=tmp_path / "c.sqlite", run_dir=tmp_path / "r"
    )
    assert result.search["screened"] == 2  # the same two demos, inline and as turns
    assert result.search["confirmed"] >= 1 and result.best_test is not None
    seen = {r.prompt.demo_format for r in readable_history(tmp_path / "r" / "history.jsonl")}
    assert seen == {"inline", "turns"}
    # the chat template renders the demo turns as real user/assistant turns
    turns = dataclasses.replace(task.seed_prompt(), demos=task.train[:2], demo_format="turns")
    text = smollm2.tokenizer.apply_chat_template(
        [m.to_dict() for m in turns.render(task.test[0])], tokenize=False, add_generation_prompt=True
    )
    assert text.count("<|im_start|>assistant") == 3 and text.count("<|im_start|>user") == 3
