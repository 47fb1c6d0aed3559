"""The optimizer protocol. The runner owns the loop; an optimizer is only its algorithm.

Contract:

- ``setup(ctx)`` is called once with the :class:`RunContext` (task, evaluator, proposer client, seeded rng).
- ``propose(state)`` returns new candidates: a :class:`~promptopt.candidate.Prompt` is evaluated on the
  full dev split, an :class:`EvalRequest` on the examples it names (a minibatch). An empty list ends the run.
  It must not change the task or earlier candidates. All randomness comes from ``ctx.rng``.
- ``observe(state, records)`` receives the trial records of those candidates (per-example predictions,
  scores and errors), in the same order.
- ``should_stop(state)`` may end the run early.
- ``min_calls(task)`` (optional) is the fewest calls beyond the seed prompt's dev evaluation the optimizer
  needs to screen and confirm one candidate; the runner refuses a smaller call budget before spending anything.

Optimizers that screen candidates on minibatches plan with :meth:`RunContext.calls_left` so that their best
candidates are always confirmed on the full dev split before the budget runs out (:mod:`promptopt.optimizers.planning`).

Algorithm settings live in a frozen ``Config`` dataclass (every field has a default); run settings
(budget, seed, models) go to :func:`promptopt.optimize`.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from promptopt._registry import Registry
from promptopt.candidate import Prompt
from promptopt.data import Example
from promptopt.exceptions import ConfigError

if TYPE_CHECKING:
    from promptopt.client import ModelClient
    from promptopt.evaluation import Evaluator
    from promptopt.history import History, TrialRecord
    from promptopt.racing import RaceTotals
    from promptopt.task import Task


@dataclass(frozen=True)
class EvalRequest:
    """Evaluate ``prompt`` on ``examples`` only (a minibatch), not on the full dev split."""

    prompt: Prompt
    examples: tuple[Example, ...]


@dataclass
class RunContext:
    task: Task
    evaluator: Evaluator
    proposer: ModelClient
    rng: random.Random
    seed: int
    run_dir: Path | None = None
    planned_cap: int | None = None
    """Planned calls at which this context's budget ends (a stage of a composite optimizer); None: the run's."""

    def calls_left(self) -> int | None:
        """Calls left to plan with (:meth:`~promptopt.budget.BudgetTracker.planned_left`; None: no call limit)."""
        budget = self.evaluator.client.budget
        left = budget.planned_left()
        if self.planned_cap is None:
            return left
        capped = max(0, self.planned_cap - budget.planned)
        return capped if left is None else min(left, capped)

    def confirmation_cost(self, scored: int, subprompts: int = 1) -> int:
        """Planned calls to score a candidate on the full dev split after it was scored on ``scored`` dev
        examples (those are cache hits — unless the run has no cache, when they are paid again)."""
        cached = self.evaluator.client.cache is not None
        return subprompts * (len(self.task.dev) - (scored if cached else 0))


@dataclass
class RunState:
    history: History
    seed_record: TrialRecord
    step: int = 0
    stop_reason: str | None = None
    rejected: Counter[str] = field(default_factory=Counter)
    """Proposals discarded before evaluation, by reason (empty, duplicate, too_long, ...)."""
    _stop_requested: bool = field(default=False, repr=False)

    def reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def request_stop(self, reason: str = "stopped by a callback") -> None:
        self._stop_requested = True
        self.stop_reason = reason

    @property
    def stop_requested(self) -> bool:
        return self._stop_requested

    def best(self) -> TrialRecord:
        return self.history.best() or self.seed_record


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """Base of every optimizer config: frozen, keyword-only, every field defaulted."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            bounds = f.metadata.get("min")
            if bounds is not None and value is not None and value < bounds:
                raise ConfigError(f"must be >= {bounds}, got {value!r}", field=f.name)


class Optimizer:
    """Base class: ``Optimizer(config=None, **overrides)``."""

    name: ClassVar[str]
    """Registry name; defaults to the class name for unregistered subclasses."""
    Config: ClassVar[type[OptimizerConfig]] = OptimizerConfig
    uses_proposer: ClassVar[bool] = False
    needs_trainable_model: ClassVar[bool] = False
    """Trains in process (soft prompts): the runner refuses a task model without ``capabilities.trainable``."""
    racing: RaceTotals | None = None
    """Set by optimizers that race candidates; the runner copies the totals into the result."""
    notes: tuple[str, ...] = ()
    """What the optimizer decided and why (e.g. ``auto``'s stages); the runner copies them into the result."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" not in cls.__dict__:
            cls.name = cls.__name__

    def __init__(self, config: OptimizerConfig | None = None, **overrides: Any) -> None:
        config = config or self.Config()
        if not isinstance(config, self.Config):
            raise TypeError(f"{type(self).__name__} needs a {self.Config.__name__}, got {type(config).__name__}")
        self.config = dataclasses.replace(config, **overrides) if overrides else config

    @classmethod
    def from_config(cls, mapping: Mapping[str, Any], *, source: str | None = None) -> Optimizer:
        names = {f.name for f in dataclasses.fields(cls.Config)}
        unknown = sorted(set(mapping) - names)
        if unknown:
            raise ConfigError(
                f"unknown setting(s) {unknown} for optimizer '{cls.name}'; allowed: {sorted(names)}.",
                source=source,
                field=unknown[0],
            )
        try:
            return cls(cls.Config(**mapping))
        except TypeError as exc:
            raise ConfigError(str(exc), source=source) from None

    def to_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_config().items())
        return f"{type(self).__name__}({args})"

    # -- the protocol ---------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def propose(self, state: RunState) -> Sequence[Prompt | EvalRequest]:
        raise NotImplementedError

    def observe(self, state: RunState, records: Sequence[TrialRecord]) -> None:
        """Default: nothing to learn."""

    def should_stop(self, state: RunState) -> bool:
        return False

    def min_calls(self, task: Task) -> int:
        """Fewest calls beyond the seed's dev evaluation to screen and confirm one candidate (0: no minimum)."""
        return 0


OPTIMIZERS: Registry[type[Optimizer]] = Registry("optimizer", group="promptopt.optimizers")


def register_optimizer(name: str):
    """Class decorator: register an optimizer under ``name`` (lowercase snake case)."""

    def deco(cls: type[Optimizer]) -> type[Optimizer]:
        cls.name = name
        OPTIMIZERS.add(name, cls)
        return cls

    return deco
