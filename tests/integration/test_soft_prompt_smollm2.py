"""Prompt tuning on the embedded SmolLM2 (two short steps): the run, its PEFT export, generation with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

import peft
import torch
import transformers

import promptopt
from promptopt.models import GenerationRequest, Model
from promptopt.models.soft import SoftPromptModel, load_soft_prompt

pytestmark = pytest.mark.integration


def test_prompt_tuning_on_smollm2(smollm2: Model, smollm2_dir: Path, tmp_path: Path) -> None:
    task = promptopt.load_task("sst2")
    task = dataclasses.replace(task, splits={"train": task.train[:8], "dev": task.dev[:12], "test": task.test[:12]})
    opt = promptopt.load_optimizer("soft-prompt", max_steps=2, eval_every=2, batch_size=4)
    run = tmp_path / "run"
    result = promptopt.optimize(task, opt, smollm2, run_dir=run, cache=False)
    assert result.usage["by_role"]["train"]["calls"] == 8
    assert result.n_trials == 2 and result.best_test is not None

    adapter = run / "soft_prompt" / "step-00002"
    soft = SoftPromptModel(smollm2, load_soft_prompt(adapter).embeddings)  # type: ignore[arg-type]
    reference = peft.PeftModel.from_pretrained(transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir), adapter)
    messages = task.seed_prompt().render(task.dev[0])
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor([smollm2.encode(messages)])).logits[0, 16:]  # type: ignore[attr-defined]
        mine = soft.model(inputs_embeds=soft.embed(torch.tensor([soft.encode(messages)]))).logits[0, 16:]
    torch.testing.assert_close(mine, theirs, rtol=0, atol=1e-4)

    completion = soft.generate([GenerationRequest(messages=messages, max_tokens=4)])[0]
    assert completion.error is None and completion.completion_tokens >= 1
