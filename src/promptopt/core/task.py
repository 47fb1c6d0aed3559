"""Tasks: data splits + template + metric + parser (+ label set), built in Python or loaded from task.yaml."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from promptopt.core.candidate import DEFAULT_SYSTEM, Prompt
from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError, DataError
from promptopt.core.metrics import Metric, as_metric
from promptopt.core.parsers import Parser, make_parser
from promptopt.core.template import PromptTemplate

SPLITS = ("train", "dev", "test")


@dataclass(frozen=True, kw_only=True)
class GenerationConfig:
    """Decoding settings the evaluator uses for this task's generations."""

    max_tokens: int = 32
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ConfigError(f"must be >= 1, got {self.max_tokens}", field="generation.max_tokens")
        object.__setattr__(self, "stop", tuple(self.stop))


@dataclass(frozen=True, kw_only=True)
class Task:
    """A prompt-optimization problem. Optimizers read it and never change it.

    ``labels`` makes it a classification task: the evaluator then scores each label by log-likelihood
    (when the model can) instead of parsing free text.
    """

    name: str
    template: PromptTemplate
    instruction: str
    metric: Metric
    parser: Parser
    splits: Mapping[str, tuple[Example, ...]]
    labels: tuple[str, ...] | None = None
    system: str = DEFAULT_SYSTEM
    description: str = ""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    source: str = "<python>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "splits", {k: tuple(v) for k, v in self.splits.items()})
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(self.labels))
        for split in SPLITS:
            if not self.splits.get(split):
                raise DataError(
                    f"split '{split}' is empty. Give it examples (data.files.{split}) or a size (data.splits.{split}).",
                    source=self.source,
                )
        for split, examples in self.splits.items():
            self.template.check_inputs(examples[0].inputs)  # columns are uniform within a split
            for ex in examples:
                if not ex.labeled:
                    if split != "train":
                        raise DataError(
                            f"example '{ex.id}' in split '{split}' has no target. Only train may be unlabeled "
                            "(dev and test are scored against their targets): give it one.",
                            source=self.source,
                        )
                    continue
                if self.labels is not None and any(a not in self.labels for a in ex.answers):
                    raise DataError(
                        f"example '{ex.id}' in split '{split}' has target {ex.target!r}, which is not one of the "
                        f"labels {list(self.labels)}. Fix the data or the 'labels' mapping.",
                        source=self.source,
                    )

    @property
    def train(self) -> tuple[Example, ...]:
        return self.splits["train"]

    @property
    def dev(self) -> tuple[Example, ...]:
        return self.splits["dev"]

    @property
    def test(self) -> tuple[Example, ...]:
        return self.splits["test"]

    @property
    def unlabeled_train(self) -> tuple[Example, ...]:
        """The train examples without a target (only the label-free ``unsupervised`` optimizer takes them)."""
        return tuple(ex for ex in self.train if not ex.labeled)

    def without_train_targets(self) -> Task:
        """This task with every train target removed: a label-free run provably cannot read them."""
        return replace(self, splits={**self.splits, "train": tuple(ex.unlabeled() for ex in self.train)})

    @property
    def is_classification(self) -> bool:
        return self.labels is not None

    def seed_prompt(self) -> Prompt:
        """The task's starting prompt: its seed instruction, no demos."""
        return Prompt(instruction=self.instruction, template=self.template.source, system=self.system, origin="seed")

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "source": self.source,
            "type": "classification" if self.is_classification else "generation",
            "labels": list(self.labels) if self.labels else None,
            "metric": self.metric.name,
            "parser": self.parser.name,
            "splits": {k: len(v) for k, v in self.splits.items()},
            "inputs": sorted(self.template.input_variables),
            "instruction": self.instruction,
        }


def make_task(
    *,
    name: str,
    template: str,
    instruction: str,
    train: Sequence[Example],
    dev: Sequence[Example],
    test: Sequence[Example],
    metric: str | Mapping[str, Any] | Metric | Callable[[str, Example], float] = "exact_match",
    parser: str | Mapping[str, Any] | Parser | None = None,
    labels: Sequence[str] | None = None,
    **kwargs: Any,
) -> Task:
    """Build a task in Python (metric and parser by name or as objects).

    ``metric`` may also be a plain function ``f(prediction, example) -> float`` (named by its ``__qualname__``);
    one that cannot be called that way is a :class:`ConfigError` here, and one that raises or returns a non-number
    while scoring is an error on that example, never a score.
    """
    return Task(
        name=name,
        template=PromptTemplate(template, name=f"{name}:template"),
        instruction=instruction,
        metric=as_metric(metric),
        parser=make_parser(parser, labels=labels) if parser is None or isinstance(parser, str | Mapping) else parser,
        splits={"train": tuple(train), "dev": tuple(dev), "test": tuple(test)},
        labels=tuple(labels) if labels else None,
        **kwargs,
    )
