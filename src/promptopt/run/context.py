"""What an optimizer sees of a run: the :class:`RunContext` it runs with and the :class:`RunState` of the loop.

An optimizer evaluates through the context — :meth:`RunContext.evaluate` (one candidate, on full dev or on the
examples given) and :meth:`RunContext.evaluate_all` (several, one step) — and the loop records each evaluation as
a trial (history, callbacks, resume), charged to the run's one budget and answered from its one cache. Budget,
proposer, task model and an artifact directory are explicit handles; nothing else of the loop is reachable.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from promptopt.core.candidate import Prompt
from promptopt.core.data import Example

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    from promptopt.core.task import Task
    from promptopt.evaluation.evaluator import Evaluator
    from promptopt.models.base import Model
    from promptopt.models.budget import BudgetTracker
    from promptopt.models.client import ModelClient
    from promptopt.run.history import History, TrialRecord


@dataclass(frozen=True)
class EvalRequest:
    """Evaluate ``prompt`` on ``examples`` only (a minibatch), not on the full dev split."""

    prompt: Prompt
    examples: tuple[Example, ...]


class StopRun(Exception):
    """Raised by :meth:`RunContext.evaluate` once a callback asked the run to stop; the loop ends the run."""


@dataclass
class RunState:
    history: History
    seed_record: TrialRecord
    step: int = 0
    stop_reason: str | None = None
    rejected: Counter[str] = field(default_factory=Counter)
    """Proposals discarded before evaluation, by reason (empty, duplicate, too_long, ...)."""
    chosen: TrialRecord | None = None
    """The optimizer's own pick (:meth:`RunContext.choose`); None: the runner takes the best full-dev record."""
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


Trial = Callable[["Prompt | EvalRequest", int], "TrialRecord"]


@dataclass
class RunContext:
    """One run as an optimizer sees it. Randomness comes from ``rng`` (seeded with ``seed``) only."""

    task: Task
    evaluator: Evaluator
    proposer: ModelClient
    """The model that writes prompts (may differ from the task model)."""
    rng: random.Random
    seed: int
    state: RunState
    trial: Trial = field(repr=False)
    """The loop's recorder: evaluates one item as trial ``step`` and appends it to the history."""
    artifacts: Path | None = None
    """The run directory, where an optimizer may keep its own files (checkpoints, plots); None without one."""
    planned_cap: int | None = None
    """Planned calls at which this context's budget ends (a stage of a composite optimizer); None: the run's."""

    # -- evaluation ------------------------------------------------------------------------------------------
    def evaluate(self, prompt: Prompt, examples: Sequence[Example] | None = None) -> TrialRecord:
        """Score ``prompt`` on the full dev split, or on ``examples`` only (a minibatch); one step, one trial.

        A candidate already scored on full dev is not evaluated again (its record is returned).
        """
        item: Prompt | EvalRequest = prompt if examples is None else EvalRequest(prompt, tuple(examples))
        return self.evaluate_all([item])[0]

    def evaluate_all(self, items: Sequence[Prompt | EvalRequest]) -> list[TrialRecord]:
        """Score several candidates in one step (a :class:`Prompt` on full dev, an :class:`EvalRequest` on its
        examples), in order. Once a callback asked the run to stop, the next evaluation raises :class:`StopRun`
        (after the trial it saw: the optimizer still gets the records of the step that was under way)."""
        self.state.step += 1
        return self.record(items)

    def record(self, items: Sequence[Prompt | EvalRequest]) -> list[TrialRecord]:
        """Score ``items`` as trials of the current step (:meth:`stop_if_asked` before each)."""
        out = []
        for item in items:
            self.stop_if_asked()
            out.append(self.trial(item, self.state.step))
        return out

    def stop_if_asked(self) -> None:
        """Raise :class:`StopRun` if a callback asked the run to stop: call it before spending anything outside an
        evaluation (a proposer call; :class:`~promptopt.optimizers.proposer.Proposer` does)."""
        if self.state.stop_requested:
            raise StopRun(self.state.stop_reason or "stopped")

    @property
    def next_step(self) -> int:
        """The step the next evaluation is recorded in (what candidates proposed now carry as ``meta["step"]``)."""
        return self.state.step + 1

    # -- what the run has so far ------------------------------------------------------------------------------
    @property
    def history(self) -> History:
        return self.state.history

    @property
    def seed_record(self) -> TrialRecord:
        """The seed prompt's full-dev record (scored before the optimizer starts)."""
        return self.state.seed_record

    def best(self) -> TrialRecord:
        """The best full-dev record so far (the seed's if nothing beat it)."""
        return self.state.best()

    def choose(self, record: TrialRecord) -> None:
        """Make ``record`` (a complete full-dev trial) the run's result whatever the dev scores say: for an optimizer
        that must not select by dev labels (``unsupervised``). Its dev score is still reported; ``select="significant"``
        does not apply (it would compare dev scores)."""
        if not record.full or record.result is None:
            raise ValueError("choose() takes a complete full-dev trial record")
        self.state.chosen = record

    def reject(self, reason: str) -> None:
        """Count a proposal discarded before evaluation (empty, duplicate, too long, …)."""
        self.state.reject(reason)

    # -- handles ----------------------------------------------------------------------------------------------
    @property
    def budget(self) -> BudgetTracker:
        """The run's one budget (calls, tokens, cost, time; shared by task model, proposer and training)."""
        return self.evaluator.client.budget

    @property
    def task_model(self) -> Model:
        return self.evaluator.client.model

    def capped(self, calls: int | None) -> RunContext:
        """This context for a stage that may plan ``calls`` more calls (None: no cap of its own)."""
        cap = None if calls is None else self.budget.planned + calls
        return dataclasses.replace(self, planned_cap=cap)

    def calls_left(self) -> int | None:
        """Calls left to plan with (:meth:`~promptopt.models.budget.BudgetTracker.planned_left`; None: no limit)."""
        budget = self.budget
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


class RunnableOptimizer(Protocol):
    """What the loop needs of an optimizer (:class:`promptopt.optimizers.base.Optimizer` implements it).

    The attributes are read-only here: an optimizer may define them as class variables.
    """

    @property
    def name(self) -> str: ...

    @property
    def notes(self) -> tuple[str, ...]: ...

    @property
    def racing(self) -> DataclassInstance | None:
        """A dataclass of racing totals (:class:`~promptopt.optimizers.racing.RaceTotals`), or None."""
        ...

    def run(self, ctx: RunContext) -> str | None:
        """Optimize until done; return why it stopped (None: "optimizer finished")."""
        ...
