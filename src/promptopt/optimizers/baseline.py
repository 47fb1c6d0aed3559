"""``baseline``: scores the task's seed prompt and nothing else — the number every optimizer must beat."""

from __future__ import annotations

from collections.abc import Sequence

from promptopt.candidate import Prompt
from promptopt.optimizers.base import EvalRequest, Optimizer, RunState, register_optimizer


@register_optimizer("baseline")
class BaselineOptimizer(Optimizer):
    """Scores the seed prompt only (the runner always evaluates it first); proposes nothing."""

    def propose(self, state: RunState) -> Sequence[Prompt | EvalRequest]:
        return []
