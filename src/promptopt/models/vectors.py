"""Task Prompt Vectors (Belanec et al., 2025): arithmetic on soft prompts.

A task prompt vector is a tuned soft prompt minus its initialisation. Soft prompts tuned from the same
seeded initialisation (same base model, init method, seed and number of virtual tokens) give vectors in
one space, so they can be added and scaled; the initialisation plus a weighted sum of other tasks'
vectors is a starting soft prompt for a new task (``soft_prompt`` optimizer, option ``tpv``).

:class:`VectorStore` keeps vectors on disk, one directory per (base model, init and seed, task):
``<root>/<base model>/<init>-seed<seed>/<task>/`` holding ``vector.safetensors`` and ``vector.json``
(default root ``$PROMPTOPT_HOME/vectors``). A vector is only ever applied to prompts of its own key:
anything else is refused with an error naming both.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from promptopt.core._imports import require
from promptopt.core.exceptions import ConfigError
from promptopt.models.cache import promptopt_home

torch = require("torch", extra="hf", feature="task prompt vectors")
safetensors_torch = require("safetensors.torch", extra="hf", feature="task prompt vectors")

SEEDED_INITS = ("random", "vocab")
"""Initialisations that a seed determines, so vectors of different tasks share one origin."""
_VALUES = "vector.safetensors"
_META = "vector.json"


@dataclass(frozen=True)
class TaskPromptVector:
    """``values`` (float32, ``(n_tokens, dim)``) relative to the ``init`` soft prompt drawn with ``init_seed`` on
    ``base_model``; ``tasks`` maps each task in it to its coefficient (``{"sst2": 1.0}`` for a tuned one)."""

    values: Any
    base_model: str
    init: str
    init_seed: int
    tasks: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.init not in SEEDED_INITS:
            raise ConfigError(
                f"task prompt vectors need a seeded init ({' or '.join(SEEDED_INITS)}), got {self.init!r}: a text "
                "init differs between tasks, so its vectors have no common origin.",
                field="init",
            )
        object.__setattr__(self, "values", self.values.detach().float().cpu())
        object.__setattr__(self, "tasks", MappingProxyType({k: float(v) for k, v in self.tasks.items() if v}))

    @classmethod
    def from_prompts(
        cls, tuned: Any, init_values: Any, *, task: str, base_model: str, init: str, init_seed: int
    ) -> TaskPromptVector:
        """The vector of ``task``: its tuned soft prompt minus the initialisation it was tuned from."""
        if tuned.shape != init_values.shape:
            raise ConfigError(f"tuned prompt {tuple(tuned.shape)} and init {tuple(init_values.shape)} differ in shape")
        values = tuned.detach().float().cpu() - init_values.detach().float().cpu()
        return cls(values, base_model, init, init_seed, {task: 1.0})

    @property
    def origin(self) -> str:
        return f"{self.base_model!r} with {self.init} init, seed {self.init_seed}, {self.values.shape[0]} tokens"

    def check(self, *, base_model: str, init: str, init_seed: int, shape: tuple[int, ...]) -> None:
        """Refuse to combine with prompts from another base model, init, seed or size."""
        mine = (self.base_model, self.init, self.init_seed, tuple(self.values.shape))
        if mine != (base_model, init, init_seed, tuple(shape)):
            other = f"{base_model!r} with {init} init, seed {init_seed}, {shape[0]} tokens"
            raise ConfigError(
                f"the task prompt vector of {self.label} was made on {self.origin}; it cannot be used on {other}. "
                "Vectors only combine within one base model, init, seed and number of virtual tokens.",
                field="tpv",
            )

    @property
    def label(self) -> str:
        return " + ".join(f"{w:g}·{t}" for t, w in self.tasks.items()) or "0"

    def __add__(self, other: TaskPromptVector) -> TaskPromptVector:
        other.check(base_model=self.base_model, init=self.init, init_seed=self.init_seed, shape=self.values.shape)
        tasks = dict(self.tasks)
        for task, w in other.tasks.items():
            tasks[task] = tasks.get(task, 0.0) + w
        return TaskPromptVector(self.values + other.values, self.base_model, self.init, self.init_seed, tasks)

    def __mul__(self, scale: float) -> TaskPromptVector:
        tasks = {t: w * scale for t, w in self.tasks.items()}
        return TaskPromptVector(self.values * scale, self.base_model, self.init, self.init_seed, tasks)

    __rmul__ = __mul__

    def __neg__(self) -> TaskPromptVector:
        return self * -1.0

    def __sub__(self, other: TaskPromptVector) -> TaskPromptVector:
        return self + -other

    def apply(self, init_values: Any) -> Any:
        """The soft prompt ``init + vector`` (float32)."""
        if tuple(init_values.shape) != tuple(self.values.shape):
            raise ConfigError(f"init {tuple(init_values.shape)} does not fit vector {tuple(self.values.shape)}")
        return init_values.detach().float().cpu() + self.values

    def save(self, directory: str | Path) -> Path:
        """Write ``vector.safetensors`` and ``vector.json`` into ``directory`` (replacing a previous vector)."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".{uuid.uuid4().hex[:8]}.tmp"
        safetensors_torch.save_file({"values": self.values.contiguous()}, str(tmp))
        os.replace(tmp, out / _VALUES)
        meta = {
            "base_model": self.base_model,
            "init": self.init,
            "init_seed": self.init_seed,
            "tasks": dict(self.tasks),
            "n_tokens": self.values.shape[0],
            "dim": self.values.shape[1],
        }
        (out / _META).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> TaskPromptVector:
        path = Path(directory)
        try:
            meta = json.loads((path / _META).read_text())
            values = safetensors_torch.load_file(str(path / _VALUES))["values"]
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"not a task prompt vector directory ({exc})", source=str(path)) from None
        return cls(values, meta["base_model"], meta["init"], int(meta["init_seed"]), meta["tasks"])


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "_"


class VectorStore:
    """Task prompt vectors on disk, keyed by (base model, init and seed, task)."""

    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else promptopt_home() / "vectors"

    def __repr__(self) -> str:
        return f"VectorStore({str(self.root)!r})"

    def path(self, task: str, *, base_model: str, init: str = "random", init_seed: int = 0) -> Path:
        return self.root / _safe(base_model) / f"{init}-seed{init_seed}" / _safe(task)

    def put(self, vector: TaskPromptVector, task: str | None = None) -> Path:
        """Store ``vector`` under ``task`` (default: its only task), replacing an earlier one."""
        if task is None:
            if len(vector.tasks) != 1:
                raise ConfigError(f"name the task to store the combination {vector.label} under", field="task")
            task = next(iter(vector.tasks))
        path = self.path(task, base_model=vector.base_model, init=vector.init, init_seed=vector.init_seed)
        return vector.save(path)

    def get(self, task: str, *, base_model: str, init: str = "random", init_seed: int = 0) -> TaskPromptVector:
        """The vector of ``task`` for this base model, init and seed; a clear error if there is none."""
        path = self.path(task, base_model=base_model, init=init, init_seed=init_seed)
        key = f"{base_model!r} with {init} init, seed {init_seed}"
        if not (path / _META).is_file():
            elsewhere = sorted(
                f"{e['base_model']!r} ({e['init']} init, seed {e['init_seed']})"
                for e in self.entries()
                if e["task"] == task
            )
            hint = f" It is stored for {', '.join(elsewhere)} only." if elsewhere else ""
            have = self.tasks(base_model=base_model, init=init, init_seed=init_seed)
            raise ConfigError(
                f"no task prompt vector for task {task!r} on {key} in {self.root}.{hint} "
                f"Stored for this key: {have or 'none'}. Tune one with the soft_prompt optimizer (save_vector: true).",
                field="tpv",
            )
        vector = TaskPromptVector.load(path)
        if (vector.base_model, vector.init, vector.init_seed) != (base_model, init, init_seed):
            raise ConfigError(f"the vector stored here was made on {vector.origin}, not {key}", source=str(path))
        return vector

    def tasks(self, *, base_model: str, init: str = "random", init_seed: int = 0) -> list[str]:
        """Tasks with a stored vector for this base model, init and seed."""
        key = (base_model, init, init_seed)
        return sorted(e["task"] for e in self.entries() if (e["base_model"], e["init"], e["init_seed"]) == key)

    def entries(self) -> list[dict[str, Any]]:
        """Every stored vector: task, base model, init, seed, coefficients and path."""
        out = []
        for meta_file in sorted(self.root.glob(f"*/*/*/{_META}")):
            meta = json.loads(meta_file.read_text())
            out.append({"task": meta_file.parent.name, **meta, "path": str(meta_file.parent)})
        return out

    def combine(
        self, weights: Mapping[str, float], *, base_model: str, init: str = "random", init_seed: int = 0
    ) -> TaskPromptVector:
        """``Σ weight · vector(task)`` over ``weights``, all from this base model, init and seed."""
        if not weights:
            raise ConfigError("give at least one task to combine", field="tpv")
        total: TaskPromptVector | None = None
        for task, weight in weights.items():
            part = float(weight) * self.get(task, base_model=base_model, init=init, init_seed=init_seed)
            total = part if total is None else total + part
        assert total is not None
        return total
