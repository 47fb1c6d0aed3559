"""A separable toy classification task and a fake model that learns in context, for the label-free
``unsupervised`` optimizer's tests and contract case.

"Is it an animal?" over 16 animals and 16 colours. The fake model knows the first half of each list (confidently
right); on the rest, without demonstrations of both labels in the prompt, it leans weakly to "yes" (label scores
-0.5 vs -1.0; generating "yes" on two samples of three), so the seed prompt's pseudo-labels are wrong on the
unknown colours. Once the prompt shows a "yes" and a "no" demo it answers every word right, so a pseudo-label
loop converges to the true labels in two rounds.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from promptopt.core.data import Example
from promptopt.core.messages import Messages
from promptopt.core.task import Task, make_task
from promptopt.models.base import GenerationRequest, ScoreRequest
from promptopt.models.fake import FakeModel, last_user
from promptopt.testing.contracts import ContractCase

ANIMALS = ("cat", "dog", "bird", "fish", "horse", "mouse", "cow", "sheep",
           "goat", "duck", "frog", "bear", "wolf", "lion", "deer", "seal")  # fmt: skip
COLOURS = ("red", "blue", "green", "black", "white", "pink", "gray", "brown",
           "gold", "teal", "navy", "plum", "cyan", "lime", "rust", "sand")  # fmt: skip
KNOWN = frozenset(ANIMALS[:8] + COLOURS[:8])
ICL_TEMPLATE = (
    "{{ instruction }}\n{% for d in demos %}Word: {{ d.word }}\nAnswer: {{ d.answer }}\n{% endfor %}"
    "Word: {{ word }}\nAnswer:"
)
LABELS = ("yes", "no")


def truth(word: str) -> str:
    return "yes" if word in ANIMALS else "no"


def _knows(messages: Messages) -> tuple[str, bool]:
    """The query word, and whether the model answers it right for sure (known, or both labels shown as demos)."""
    query = re.findall(r"Word: (\w+)", last_user(messages))[-1]
    context = "\n".join(m.content for m in messages if m.role != "system")
    shown = {label for label in LABELS if re.search(rf"(Answer: |^){label}$", context, re.MULTILINE)}
    return query, query in KNOWN or shown == set(LABELS)


def icl_score(request: ScoreRequest) -> list[float]:
    """Label log-probs of the in-context learner (the module docstring's rule)."""
    query, sure = _knows(request.messages)
    if sure:
        return [0.0 if c == truth(query) else -5.0 for c in request.continuations]
    return [-0.5 if c == "yes" else -1.0 for c in request.continuations]


def icl_answer(request: GenerationRequest) -> str:
    """The generated answer: the sure label, else "yes" on two samples of three (greedy: "yes")."""
    query, sure = _knows(request.messages)
    if sure:
        return truth(query)
    return "no" if request.sample % 3 == 0 and request.sample else "yes"


def icl_model() -> FakeModel:
    """The fake in-context learner: label scoring and (sampled) generation by the same rule."""
    return FakeModel(fn=icl_answer, score_fn=icl_score, name="fake:icl")


def separable_task(*, labeled_train: bool = False) -> Task:
    """The toy task: 20 train (unlabeled unless ``labeled_train``), 6 dev and 6 test examples, both labels in each."""
    pick = lambda idx: [w for i in idx for w in (ANIMALS[i], COLOURS[i])]  # noqa: E731
    train, dev, test = pick([0, 1, 2, 3, 4, 8, 9, 10, 11, 12]), pick([5, 13, 6]), pick([7, 14, 15])
    task = make_task(name="animal-icl", template=ICL_TEMPLATE, instruction="Is it an animal?", train=_examples(train),
                     dev=_examples(dev), test=_examples(test), metric="accuracy", labels=list(LABELS))  # fmt: skip
    return task if labeled_train else task.without_train_targets()


def _examples(words: Sequence[str]) -> list[Example]:
    return [Example(id=w, inputs={"word": w}, target=truth(w)) for w in words]


UNSUPERVISED_TOY = {"shots": [2], "n_draws": 1, "demo_formats": ["inline"], "per_label": 3, "pool_size": 20}
"""Small settings: one candidate per round."""


def write_unlabeled_task(directory: Path) -> Path:
    """The separable task as files: ``train.jsonl`` without a target column, ``unlabeled_train: true``."""
    task = separable_task(labeled_train=True)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "template.jinja").write_text(ICL_TEMPLATE, encoding="utf-8")
    for split, examples in task.splits.items():
        rows = [{"id": ex.id, "word": ex.inputs["word"], **({"label": ex.target} if split != "train" else {})}
                for ex in examples]  # fmt: skip
        (directory / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = {"name": task.name, "instruction": task.instruction, "template": "template.jinja", "target": "label",
            "data": {"files": {s: f"{s}.jsonl" for s in task.splits}}, "labels": list(LABELS),
            "metric": "accuracy", "unlabeled_train": True}  # fmt: skip
    path = directory / "task.yaml"
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")  # JSON is YAML
    return path


def unsupervised_case(workdir: Path) -> ContractCase:
    """``unsupervised`` on the separable task's files (train without targets) with the in-context fake learner."""
    return ContractCase(optimizer="unsupervised", settings=UNSUPERVISED_TOY, model=icl_model,
                        task=write_unlabeled_task(workdir / "animal-icl"), budget_calls=120)  # fmt: skip
