"""Callbacks receive typed events; any callback may stop the run with ``event.state.request_stop()``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from promptopt.models.budget import BudgetTracker
    from promptopt.run.context import RunState
    from promptopt.run.history import TrialRecord
    from promptopt.run.result import OptimizationResult


@dataclass(frozen=True)
class RunStarted:
    config: dict[str, Any]
    budget: BudgetTracker


@dataclass(frozen=True)
class EvaluationProgress:
    """Examples done in the evaluation under way (``label`` says which: seed, trial N, test)."""

    label: str
    done: int
    total: int


@dataclass(frozen=True)
class TrialFinished:
    record: TrialRecord
    state: RunState
    budget: BudgetTracker


@dataclass(frozen=True)
class RunFinished:
    result: OptimizationResult


Event = RunStarted | EvaluationProgress | TrialFinished | RunFinished


class Callback(Protocol):
    def __call__(self, event: Event, /) -> None: ...
