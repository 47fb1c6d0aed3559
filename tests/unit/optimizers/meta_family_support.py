"""Shared by the meta-prompt family tests: a scripted proposer that knows the toy task's next better
instruction, and helpers to run an optimizer and read its history."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import promptopt
from promptopt.models.base import GenerationRequest
from promptopt.models.budget import Budget
from promptopt.models.fake import FakeModel, last_user
from promptopt.optimizers import Optimizer
from promptopt.run.result import OptimizationResult
from promptopt.testing import (
    TOY_BEST_INSTRUCTION,
    TOY_PARTIAL_INSTRUCTION,
    TOY_SEED_INSTRUCTION,
    make_toy_task,
    toy_model,
)

NEXT = {TOY_SEED_INSTRUCTION: TOY_PARTIAL_INSTRUCTION, TOY_PARTIAL_INSTRUCTION: TOY_BEST_INSTRUCTION}
"""The edit the scripted proposer makes: seed → 'Reverse the word.' (1 word) → the optimum (4 words)."""
RAMBLE = "Sure! Here is a much longer instruction that rewrites everything you had before and adds many more words."
"""What the scripted proposer says on every ``ramble_every``-th sample: an 18-word rewrite."""
ANALYSIS = "The prompt says to repeat the word, but every label is the word spelled backwards."

_CURRENT = (r"## Current Prompt\n(.+)", r'My current prompt is:\n"(.+)"', r"Instruction: (.+)")


def current_instruction(user: str) -> str:
    """The instruction a meta-prompt asks to improve (for OPRO: the best listed, i.e. the last)."""
    for pattern in _CURRENT:
        if m := re.search(pattern, user):
            return m.group(1).strip()
    listed = re.findall(r"text:\n(.+)", user)
    return listed[-1].strip() if listed else ""


def scripted_editor(*, ramble_every: int = 3, name: str = "fake:editor") -> FakeModel:
    """A proposer for the toy task: analyses/gradients get :data:`ANALYSIS`, paraphrase requests get
    'Please <instruction>', edit requests get the next better instruction (:data:`NEXT`; an unknown one
    is returned unchanged, i.e. a duplicate) — except every ``ramble_every``-th sample, which rambles."""

    def fn(request: GenerationRequest) -> str:
        user = last_user(request.messages)
        if "reasons why" in user or "provide reasoning" in user or "explain how the prompt" in user:
            return ANALYSIS
        current = current_instruction(user)
        if "Generate a variation" in user:
            return "Please " + current[0].lower() + current[1:]
        if ramble_every and request.sample % ramble_every == 0:
            return RAMBLE
        better = NEXT.get(current, current)
        return f"<INS>{better}</INS>" if "<INS>" in user else f"The new prompt is: {better}"

    return FakeModel(fn=fn, name=name)


def run(
    optimizer: str | Optimizer,
    *,
    proposer: Any = None,
    budget: int = 400,
    seed: int = 0,
    run_dir: Path | None = None,
    **kwargs: Any,
) -> OptimizationResult:
    """Optimize the toy task with the toy rule model and (by default) the scripted editor, no cache."""
    return promptopt.optimize(
        make_toy_task(),
        optimizer,
        toy_model(),
        proposer=proposer if proposer is not None else scripted_editor(),
        budget=Budget(max_calls=budget),
        seed=seed,
        cache=kwargs.pop("cache", False),
        run_dir=run_dir,
        **kwargs,
    )


def history_rows(run_dir: Path) -> list[dict[str, Any]]:
    """history.jsonl without wall-clock time and spend (calls so far, calls paid, cache hits: a resumed run
    replays from the cache), for exact comparisons of what was evaluated and how it scored."""
    rows = []
    for line in (run_dir / "history.jsonl").read_text().splitlines():
        d = json.loads(line)
        for key in ("elapsed", "calls_so_far"):
            d.pop(key)
        if d["result"] is not None:
            d["summary"].pop("calls")
            d["result"].pop("calls")
            for r in d["result"]["records"]:
                r.pop("cached")
        rows.append(d)
    return rows
