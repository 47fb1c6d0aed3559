"""Built-in optimizers' contract settings (:func:`default_case`): small settings on the toy task, the tiny random
Llama for the trainable ones. An optimizer that needs its own setting gets an entry in :data:`SPECIAL_CASES`."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from promptopt import testing
from promptopt.core.data import Example
from promptopt.core.task import Task, make_task
from promptopt.models.base import Model
from promptopt.testing.contracts import ContractCase
from promptopt.testing.unlabeled import unsupervised_case

TOY_PROPOSALS = (testing.TOY_PARTIAL_INSTRUCTION, testing.TOY_BEST_INSTRUCTION, "Say the word.", "Spell it.")
"""The toy proposer's answers, by sample index: a better instruction, the optimum, some others."""


def toy_proposer() -> Model:
    """A scripted proposer for the toy task (by sample index: reruns and resumes see the same script)."""
    return testing.scripted_proposer(TOY_PROPOSALS)


TOY_SETTINGS: dict[str, dict[str, Any]] = {
    "ape": {"n_prompts": 4, "minibatch_size": 6, "top_k": 2, "resample_rounds": 1, "n_resample": 2},
    "apo": {"minibatch_size": 6, "n_steps": 2},
    "opro": {"minibatch_size": 6, "n_steps": 3, "n_samples": 2},
    "pe2": {"minibatch_size": 6, "n_steps": 2},
    "feedback": {"critique": False, "n_samples": 1, "max_edit_words": 20, "patience": 2},
    "fewshot": {"shots": [2, 4], "selections": ["random"], "minibatch_size": 6, "chunk_size": 4},
    "ics": {"ks": [3], "shots": [1, 2], "strategies": ["random"], "aggregations": ["vote"], "minibatch_size": 6},
    "structure_search": dict(n_trials=8, minibatch_size=6, full_eval_every=4, n_instructions=2, shots=[0, 2]),
}
"""Built-ins' settings on the toy task (``auto``: its defaults, demos then pe2-compact; MiniLM where installed)."""
TOY_BUDGETS = {"baseline": 40, "ape": 80, "feedback": 80, "fewshot": 80, "opro": 90, "ics": 130, "auto": 160}
"""Call budgets on the toy task (apo, pe2, structure_search: 100; unknown optimizers: 200)."""
NO_PROPOSER = ("baseline", "fewshot", "ics")


def default_case(name: str, workdir: Path) -> ContractCase:
    """The contract case of ``name``: a built-in's small setting (``auto-trainable``: ``auto`` on the tiny model), or
    the toy task with the optimizer's defaults. ``workdir`` holds the files cases need (task files, the tiny model)."""
    if name in SPECIAL_CASES:
        return SPECIAL_CASES[name](workdir)
    task = workdir / "toy" / "task.yaml"
    if not task.is_file():
        testing.write_toy_task(task.parent)
    budget = TOY_BUDGETS.get(name, 100 if name in TOY_SETTINGS else 200)
    proposer, requires = (None if name in NO_PROPOSER else toy_proposer), ("optuna",) * (name == "structure_search")
    return ContractCase(optimizer=name, settings=TOY_SETTINGS.get(name, {}), model=testing.toy_model, task=task,
                        proposer=proposer, budget_calls=budget, requires=requires)  # fmt: skip


TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
ANIMALS = ("cat", "dog", "bird", "fish", "horse", "mouse", "cow", "sheep", "goat", "duck", "frog", "bear")
COLOURS = ("red", "blue", "green", "black", "white", "pink", "gray", "brown", "gold", "teal", "navy", "plum")
TINY_SOFT_PROMPT = {"init": "vocab", "lr": 0.1, "batch_size": 4, "max_steps": 4, "eval_every": 2, "patience": 0}
"""Soft-prompt settings for the tiny model: two checkpoints of two 4-example steps."""
_TINY_MODELS: dict[str, Model] = {}


def tiny_model(workdir: Path) -> Model:
    """A tiny random Llama (:mod:`promptopt.testing.tiny`) built in ``workdir/tiny-llama``, loaded once per process."""
    path = workdir / "tiny-llama"
    if str(path.resolve()) not in _TINY_MODELS:
        from promptopt.models.hf import HFModel
        from promptopt.testing.tiny import build_tiny_llama

        if not (path / "config.json").is_file():
            corpus = [" ".join([*ANIMALS, *COLOURS, "yes", "no", "is it an animal? word:"])] * 20
            build_tiny_llama(path, corpus, chat_template=TINY_CHAT_TEMPLATE, vocab_size=300, max_positions=512,
                             initializer_range=0.3, tie_word_embeddings=True)  # fmt: skip
        _TINY_MODELS[str(path.resolve())] = HFModel(str(path), device="cpu", batch_size=8)
    return _TINY_MODELS[str(path.resolve())]


def animal_task() -> Task:
    """'Is the word an animal?' (labels yes/no; 8 train, 8 dev, 8 test examples), for the tiny model."""
    pairs = [p for a, c in zip(ANIMALS, COLOURS, strict=True) for p in ((a, "yes"), (c, "no"))]
    exs = [Example(id=word, inputs={"word": word}, target=label) for word, label in pairs]
    return make_task(name="animal", template="{{ instruction }}\nWord: {{ word }}", instruction="Is it an animal?",
                     train=exs[:8], dev=exs[8:16], test=exs[16:], metric="accuracy", labels=["yes", "no"])  # fmt: skip


def soft_prompt_case(workdir: Path) -> ContractCase:
    """``soft_prompt`` on the tiny random Llama: label scoring, two checkpoints, resumed after the first."""
    model = functools.partial(tiny_model, workdir)  # built on first use (imports torch), then shared
    return ContractCase(optimizer="soft_prompt", settings=TINY_SOFT_PROMPT, model=model, task=animal_task(),
                        budget_calls=40, stop_after=-2, requires=("torch", "transformers", "peft"))  # fmt: skip


def auto_trainable_case(workdir: Path) -> ContractCase:
    """``auto`` on the tiny model, so its soft-prompt stage runs (with the tiny settings, from a preset file)."""
    preset = workdir / "tiny-soft-prompt.yaml"
    workdir.mkdir(parents=True, exist_ok=True)
    preset.write_text(json.dumps({"optimizer": "soft_prompt", "config": TINY_SOFT_PROMPT}) + "\n", encoding="utf-8")
    soft = soft_prompt_case(workdir)
    return dataclasses.replace(soft, optimizer="auto", settings={"soft_prompt": str(preset)}, budget_calls=120,
                               label="auto (trainable model)")  # fmt: skip


def dspy_case(teleprompter: str, workdir: Path) -> ContractCase:
    """``dspy`` with ``teleprompter`` on the toy task, with a fake that writes DSPy's field markers."""
    from promptopt.testing.dspy_fakes import dspy_toy_model

    default = default_case("baseline", workdir)
    settings = {"teleprompter": teleprompter, "candidates": 2, "trials": 2, "demos": 2, "bootstrapped_demos": 2}
    return dataclasses.replace(default, optimizer="dspy", settings=settings, model=dspy_toy_model,
                               proposer=dspy_toy_model, budget_calls=150, requires=("dspy",),
                               label=None if teleprompter == "labeled" else f"dspy-{teleprompter}")  # fmt: skip


TINY_GRADIENT_TEXT: dict[str, Any] = dict(
    batch_size=4, n_candidates=3, minibatch_size=2, race_stages=2, steps=3, top_k=8
)
"""gradient_text on the tiny model: three steps of three single-token swaps, raced on 2 then 4 dev examples."""


def gradient_text_case(workdir: Path) -> ContractCase:
    """``gradient_text`` on the tiny random Llama: token gradients on the animal task, resumed halfway."""
    model = functools.partial(tiny_model, workdir)
    return ContractCase(optimizer="gradient_text", settings=TINY_GRADIENT_TEXT, model=model, task=animal_task(),
                        budget_calls=70, requires=("torch", "transformers", "peft"))  # fmt: skip


SPECIAL_CASES: dict[str, Callable[[Path], ContractCase]] = {
    "soft_prompt": soft_prompt_case,
    "gradient_text": gradient_text_case,
    "auto-trainable": auto_trainable_case,
    "dspy": functools.partial(dspy_case, "labeled"),
    "dspy-mipro": functools.partial(dspy_case, "mipro"),
    "unsupervised": unsupervised_case,
}
"""Cases built by their own function (from the work directory) instead of the toy-task default."""
