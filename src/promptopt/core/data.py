"""Examples and splits."""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from promptopt.core.exceptions import DataError

Target = str | tuple[str, ...]
"""A reference answer, or several acceptable answers (the metric takes the max over them)."""


@dataclass(frozen=True, kw_only=True)
class Example:
    """One example: the template's input fields, the reference answer and a stable id.

    ``target`` is None for an unlabeled example (a train split of a task with ``unlabeled_train``, for the
    label-free ``unsupervised`` optimizer); reading its :attr:`answers` is then a :class:`DataError`.
    """

    id: str
    inputs: Mapping[str, Any]
    target: Target | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "inputs", MappingProxyType(dict(self.inputs)))
        object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))
        if isinstance(self.target, list):
            object.__setattr__(self, "target", tuple(self.target))

    @property
    def answers(self) -> tuple[str, ...]:
        """All acceptable answers (one for most tasks)."""
        if self.target is None:
            raise DataError(
                f"example '{self.id}' is unlabeled (no target); only the label-free 'unsupervised' optimizer "
                "takes unlabeled train examples: give targets or use --optimizer unsupervised."
            )
        return self.target if isinstance(self.target, tuple) else (self.target,)

    @property
    def labeled(self) -> bool:
        return self.target is not None

    def unlabeled(self) -> Example:
        """This example without its target."""
        return Example(id=self.id, inputs=self.inputs, target=None, meta=self.meta)

    @property
    def answer(self) -> str:
        """The canonical answer, shown in demonstrations."""
        return self.answers[0]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "inputs": dict(self.inputs), "target": self.target}
        if isinstance(self.target, tuple):
            out["target"] = list(self.target)
        if self.meta:
            out["meta"] = dict(self.meta)
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Example:
        return cls(id=str(d["id"]), inputs=d["inputs"], target=d.get("target"), meta=d.get("meta", {}))


def split_examples(
    examples: Sequence[Example], sizes: Mapping[str, int | None], *, seed: int
) -> dict[str, tuple[Example, ...]]:
    """Shuffle with ``seed`` and cut consecutive splits of the given sizes (``None`` = the rest).

    A size larger than what is left is refused (:class:`DataError` naming ``data.splits.<name>``), never cut short.
    """
    pool = list(examples)
    random.Random(seed).shuffle(pool)
    out: dict[str, tuple[Example, ...]] = {}
    start = 0
    for name, size in sizes.items():
        left = len(pool) - start
        if size is not None and size > left:
            after = ", ".join(f"{k} {len(v)}" for k, v in out.items())
            have = f"{left} of the {len(pool)} are left after {after}" if out else f"the data has {left}"
            fix = f"lower it to at most {left} or to null (all that is left)" if left else "shrink the other splits"
            raise DataError(f"asks for {size} examples but {have}: {fix} or add examples.", field=f"data.splits.{name}")
        end = len(pool) if size is None else start + size
        out[name] = tuple(pool[start:end])
        start = end
    return out
