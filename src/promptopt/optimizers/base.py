"""The optimizer protocol. The runner owns the loop; an optimizer is only its algorithm.

Contract:

- ``setup(ctx)`` is called once with the :class:`RunContext` (task, evaluator, proposer client, seeded rng).
- ``propose(state)`` returns new candidates: a :class:`~promptopt.core.candidate.Prompt` is evaluated on the
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
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from promptopt.core._registry import Registry
from promptopt.core.candidate import Prompt
from promptopt.core.exceptions import ConfigError
from promptopt.optimizers.config import OptimizerConfig
from promptopt.run.context import EvalRequest, RunContext, RunState

if TYPE_CHECKING:
    from promptopt.core.task import Task
    from promptopt.optimizers.racing import RaceTotals
    from promptopt.run.history import TrialRecord


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
"""Built-ins are listed here and imported on first use; third-party optimizers register through the entry-point
group or :func:`register_optimizer`."""
for _name, _where in (
    ("ape", "promptopt.optimizers.ape:APEOptimizer"),
    ("apo", "promptopt.optimizers.apo:APOOptimizer"),
    ("auto", "promptopt.optimizers.auto:AutoOptimizer"),
    ("baseline", "promptopt.optimizers.baseline:BaselineOptimizer"),
    ("feedback", "promptopt.optimizers.feedback:FeedbackOptimizer"),
    ("fewshot", "promptopt.optimizers.fewshot:FewShotOptimizer"),
    ("ics", "promptopt.optimizers.ics:ICSOptimizer"),
    ("opro", "promptopt.optimizers.opro:OPROOptimizer"),
    ("pe2", "promptopt.optimizers.pe2:PE2Optimizer"),
    ("soft_prompt", "promptopt.optimizers.soft_prompt:SoftPromptOptimizer"),
    ("structure_search", "promptopt.optimizers.structure_search:StructureSearchOptimizer"),
):
    OPTIMIZERS.add(_name, _where)


def register_optimizer(name: str):
    """Class decorator: register an optimizer under ``name`` (lowercase snake case)."""

    def deco(cls: type[Optimizer]) -> type[Optimizer]:
        cls.name = name
        OPTIMIZERS.add(name, cls)
        return cls

    return deco
