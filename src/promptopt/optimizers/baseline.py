"""``baseline``: scores the task's seed prompt and nothing else — the number every optimizer must beat."""

from __future__ import annotations

from collections.abc import Sequence

from promptopt.core.candidate import Prompt
from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.run.context import EvalRequest, RunState


@register_optimizer("baseline")
class BaselineOptimizer(Optimizer):
    """Scores the seed prompt only (the runner always evaluates it first); proposes nothing."""

    def propose(self, state: RunState) -> Sequence[Prompt | EvalRequest]:
        return []
