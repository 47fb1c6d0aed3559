"""Test helpers shipped with promptopt: a toy task with a known optimum and scripted fake models.

The *toy task* asks for a word spelled backwards. Its fake model (:func:`toy_model`) follows a rule, so
how well a prompt does is known in advance:

- a prompt that says neither "reverse" nor "letter by letter" gets words of up to 3 letters right;
- one that says "reverse" gets words of up to 6 letters right;
- one that says "reverse" *and* "letter by letter" gets every word right (the known optimum, see
  :data:`TOY_BEST_INSTRUCTION`);
- two or more demonstrations in the prompt lift it one tier.

Wrong answers echo the word unchanged. So a test can assert that an optimizer *finds* the better
instruction, not only that it runs::

    from promptopt.testing import make_toy_task, toy_model, scripted_proposer
    task = make_toy_task()
    proposer = scripted_proposer(["Repeat the word.", "Reverse the word, letter by letter."])
    result = promptopt.optimize(task, "ape", toy_model(), proposer=proposer, cache=False)
    assert result.best_prompt.instruction == "Reverse the word, letter by letter."

Scripted proposers answer by the request's ``sample`` index, not by call order, so a rerun that gets
some answers from the cache sees the same script.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from promptopt.core.data import Example
from promptopt.core.task import Task, make_task
from promptopt.models.base import GenerationRequest
from promptopt.models.fake import FakeModel, last_user

TOY_WORDS = (
    "cat", "dog", "sun", "map", "pen", "cup", "box", "jam",
    "bird", "lamp", "frog", "stone", "river", "cloud", "garden", "pencil", "window", "rocket",
    "blanket", "morning", "holiday", "picture", "library", "mountain", "elephant", "keyboard",
    "sandwich", "umbrella", "dinosaur", "computer", "notebook", "butterfly",
)  # fmt: skip
"""32 words, none a palindrome, lengths 3 to 9."""

TOY_SYSTEM = "You solve word puzzles."
"""The toy task's system message; :func:`toy_model` uses it to tell task requests from proposer requests."""

TOY_TEMPLATE = (
    "{{ instruction }}\n"
    "{% for d in demos %}\nWord: {{ d.word }}\nAnswer: {{ d.answer }}\n{% endfor %}"
    "\nWord: {{ word }}\nAnswer:"
)
TOY_SEED_INSTRUCTION = "Repeat the word."
TOY_PARTIAL_INSTRUCTION = "Reverse the word."
"""Scores on words of up to 6 letters."""
TOY_BEST_INSTRUCTION = "Reverse the word, letter by letter."
"""The known optimum: scores 1.0 on every split."""

_WORD = re.compile(r"^Word: (\S+)\s*$", re.MULTILINE)
_THRESHOLDS = (3, 6, None)  # max word length answered correctly at tier 0, 1, 2


def toy_tier(user_message: str) -> int:
    """How good a rendered toy prompt is: 0 (seed-like), 1 (says 'reverse') or 2 (the optimum)."""
    text = user_message.lower()
    tier = 0
    if "reverse" in text:
        tier = 2 if "letter by letter" in text else 1
    n_demos = max(0, len(_WORD.findall(user_message)) - 1)
    if n_demos >= 2:
        tier += 1
    return min(tier, 2)


def toy_answer(user_message: str) -> str:
    """The rule model's answer to a rendered toy prompt: the word reversed if the prompt is good enough
    for a word that long, else the word unchanged."""
    words = _WORD.findall(user_message)
    if not words:
        return ""
    word = words[-1]
    limit = _THRESHOLDS[toy_tier(user_message)]
    return word[::-1] if limit is None or len(word) <= limit else word


def toy_expected_score(instruction: str, examples: Sequence[Example], *, n_demos: int = 0) -> float:
    """The dev/test score the rule model gives ``instruction`` on ``examples`` (for assertions)."""
    tier = 0
    if "reverse" in instruction.lower():
        tier = 2 if "letter by letter" in instruction.lower() else 1
    tier = min(2, tier + (1 if n_demos >= 2 else 0))
    limit = _THRESHOLDS[tier]
    return sum(limit is None or len(str(ex.inputs["word"])) <= limit for ex in examples) / len(examples)


def _toy_examples(seed: int) -> list[Example]:
    words = list(TOY_WORDS)
    random.Random(seed).shuffle(words)
    return [Example(id=f"toy-{w}", inputs={"word": w}, target=w[::-1]) for w in words]


def make_toy_task(*, n_train: int = 8, n_dev: int = 12, n_test: int = 12, seed: int = 0, name: str = "toy") -> Task:
    """The toy 'spell it backwards' task (see the module docstring); ``n_train + n_dev + n_test`` <= 32."""
    if n_train + n_dev + n_test > len(TOY_WORDS) or min(n_train, n_dev, n_test) < 1:
        raise ValueError(f"split sizes must be >= 1 and sum to at most {len(TOY_WORDS)}")
    exs = _toy_examples(seed)
    return make_task(
        name=name,
        template=TOY_TEMPLATE,
        instruction=TOY_SEED_INSTRUCTION,
        train=exs[:n_train],
        dev=exs[n_train : n_train + n_dev],
        test=exs[n_train + n_dev : n_train + n_dev + n_test],
        metric="exact_match",
        parser="first_line",
        system=TOY_SYSTEM,
        description="Spell the word backwards (promptopt.testing toy task).",
    )


def write_toy_task(directory: str | Path, **kwargs: Any) -> Path:
    """Write the toy task as ``directory/task.yaml`` (+ template and JSONL data) and return that path.

    ``load_task(path)`` gives the same splits, example ids and seed prompt as ``make_toy_task(**kwargs)``.
    """
    task = make_toy_task(**kwargs)
    out = Path(directory)
    (out / "data").mkdir(parents=True, exist_ok=True)
    (out / "template.jinja").write_text(TOY_TEMPLATE, encoding="utf-8")  # byte-identical: same prompt ids
    for split, examples in task.splits.items():
        rows = [json.dumps({"id": ex.id, "word": ex.inputs["word"], "target": ex.target}) for ex in examples]
        (out / "data" / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    spec = {
        "name": task.name,
        "description": task.description,
        "instruction": task.instruction,
        "system": task.system,
        "template": "template.jinja",
        "data": {"files": {s: f"data/{s}.jsonl" for s in task.splits}},
        "inputs": {"word": "word"},
        "target": "target",
        "metric": "exact_match",
        "parser": "first_line",
    }
    path = out / "task.yaml"
    path.write_text(json.dumps(spec, indent=2) + "\n", encoding="utf-8")  # JSON is valid YAML
    return path


def _script(proposals: Sequence[str]) -> Callable[[GenerationRequest], str]:
    items = list(proposals)

    def answer(request: GenerationRequest) -> str:
        if not items:
            return ""
        return items[max(request.sample - 1, 0) % len(items)]

    return answer


def scripted_proposer(proposals: Sequence[str], *, name: str = "fake:proposer", **options: Any) -> FakeModel:
    """A proposer that answers request number ``k`` (its ``sample`` index, from 1) with ``proposals[k-1]``,
    cycling. Requests at temperature 0 (sample 0) get ``proposals[0]``."""
    return FakeModel(fn=_script(proposals), name=name, **options)


def rule_model(
    answer: Callable[[str], str],
    proposals: Sequence[str] = (),
    *,
    task_system: str | None = None,
    name: str = "fake:rule",
    **options: Any,
) -> FakeModel:
    """A FakeModel in 'rule' mode: ``answer(user_message)`` answers task requests.

    When ``task_system`` is given, requests with another system message are proposer requests and are
    answered from ``proposals`` as :func:`scripted_proposer` does (one model can then play both roles).
    Other keyword options (``fail=``, ``cost_per_token=``, ``score_fn=``) go to :class:`FakeModel`.
    """
    script = _script(proposals)

    def fn(request: GenerationRequest) -> str:
        system = next((m.content for m in request.messages if m.role == "system"), None)
        if task_system is not None and system != task_system:
            return script(request)
        return answer(last_user(request.messages))

    return FakeModel(fn=fn, name=name, **options)


def toy_model(proposals: Sequence[str] = (), *, name: str = "fake:toy", **options: Any) -> FakeModel:
    """The toy task's rule model (see the module docstring); proposer requests get ``proposals``."""
    return rule_model(toy_answer, proposals, task_system=TOY_SYSTEM, name=name, **options)


__all__ = [
    "TOY_BEST_INSTRUCTION",
    "TOY_PARTIAL_INSTRUCTION",
    "TOY_SEED_INSTRUCTION",
    "TOY_SYSTEM",
    "TOY_TEMPLATE",
    "TOY_WORDS",
    "make_toy_task",
    "rule_model",
    "scripted_proposer",
    "toy_answer",
    "toy_expected_score",
    "toy_model",
    "toy_tier",
    "write_toy_task",
]
