"""What an optimizer sees of a run: the :class:`RunContext` it is set up with and the :class:`RunState` of the loop."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from promptopt.core.candidate import Prompt
from promptopt.core.data import Example

if TYPE_CHECKING:
    from promptopt.core.task import Task
    from promptopt.evaluation.evaluator import Evaluator
    from promptopt.models.client import ModelClient
    from promptopt.run.history import History, TrialRecord


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
        """Calls left to plan with (:meth:`~promptopt.models.budget.BudgetTracker.planned_left`; None: no limit)."""
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


class RunnableOptimizer(Protocol):
    """What the loop needs of an optimizer (:class:`promptopt.optimizers.base.Optimizer` implements it)."""

    name: str
    notes: tuple[str, ...]
    racing: Any
    """A dataclass of racing totals, or None."""

    def setup(self, ctx: RunContext) -> None: ...

    def propose(self, state: RunState) -> Sequence[Prompt | EvalRequest]: ...

    def observe(self, state: RunState, records: Sequence[TrialRecord]) -> None: ...

    def should_stop(self, state: RunState) -> bool: ...
