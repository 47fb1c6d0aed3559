"""The optimizer protocol. The runner owns the loop; an optimizer is only its algorithm.

An optimizer implements :meth:`Optimizer.run`: given a :class:`~promptopt.run.context.RunContext` it proposes
candidates and scores them with ``ctx.evaluate(prompt)`` (full dev) or ``ctx.evaluate(prompt, examples)`` (a
minibatch), top to bottom as its paper describes, and returns why it stopped. Every evaluation is a trial the
runner records (history, callbacks, resume), charged to the one budget and answered from the one cache; the
runner stops the run when the budget cannot pay a call (:class:`~promptopt.core.exceptions.BudgetExhausted`) or a
callback asks (:class:`~promptopt.run.context.StopRun`). All randomness comes from ``ctx.rng``; the task and
earlier candidates are never changed.

Ask/tell style is the alternative: implement ``propose(state)`` (candidates; an empty list ends the run),
``observe(state, records)`` and optionally ``should_stop(state)``, and the default :meth:`Optimizer.run` drives
them (``setup(ctx)`` is called first).

``min_calls(task)`` (optional) is the fewest calls beyond the seed prompt's dev evaluation the optimizer needs to
screen and confirm one candidate; the runner refuses a smaller call budget before spending anything. Optimizers
that screen on minibatches plan with :meth:`RunContext.calls_left` so that their best candidates are confirmed on
the full dev split before the budget runs out (:mod:`promptopt.optimizers.planning`).

Algorithm settings live in a frozen ``Config`` dataclass (every field has a default); run settings
(budget, seed, models) go to :func:`promptopt.optimize`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from promptopt.core._registry import Registry
from promptopt.core.candidate import Prompt
from promptopt.core.exceptions import ConfigError
from promptopt.optimizers.config import OptimizerConfig
from promptopt.run.context import EvalRequest, RunContext, RunState, StopRun

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
    needs_train_labels: ClassVar[bool] = True
    """Reads train targets: :func:`promptopt.optimize` refuses a task with unlabeled train examples."""
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
    def run(self, ctx: RunContext) -> str | None:
        """Optimize within ``ctx``; return why the search ended (None: it finished). Default: drive the ask/tell
        methods (``setup``, then ``should_stop`` / ``propose`` / ``observe`` until a stop or no proposals)."""
        self.setup(ctx)
        state = ctx.state
        while True:
            if state.stop_requested:
                raise StopRun(state.stop_reason or "stopped")
            if self.should_stop(state):
                return state.stop_reason or "optimizer converged"
            state.step += 1
            proposals = self.propose(state)
            if not proposals:
                return state.stop_reason
            self.observe(state, ctx.record(proposals))

    # -- ask/tell style -----------------------------------------------------------------------------------------
    def setup(self, ctx: RunContext) -> None:
        self.ctx = ctx

    def propose(self, state: RunState) -> Sequence[Prompt | EvalRequest]:
        raise NotImplementedError(f"{type(self).__name__} implements neither run(ctx) nor propose(state)")

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
    ("dspy", "promptopt.optimizers.dspy_opt:DSPyOptimizer"),
    ("feedback", "promptopt.optimizers.feedback:FeedbackOptimizer"),
    ("fewshot", "promptopt.optimizers.fewshot:FewShotOptimizer"),
    ("ics", "promptopt.optimizers.ics:ICSOptimizer"),
    ("opro", "promptopt.optimizers.opro:OPROOptimizer"),
    ("pe2", "promptopt.optimizers.pe2:PE2Optimizer"),
    ("soft_prompt", "promptopt.optimizers.soft_prompt:SoftPromptOptimizer"),
    ("structure_search", "promptopt.optimizers.structure_search:StructureSearchOptimizer"),
    ("unsupervised", "promptopt.optimizers.unsupervised:UnsupervisedOptimizer"),
):
    OPTIMIZERS.add(_name, _where)


_O = TypeVar("_O", bound=type[Optimizer])


def register_optimizer(name: str) -> Callable[[_O], _O]:
    """Class decorator: register an optimizer under ``name`` (lowercase snake case)."""

    def deco(cls: _O) -> _O:
        cls.name = name
        OPTIMIZERS.add(name, cls)
        return cls

    return deco
