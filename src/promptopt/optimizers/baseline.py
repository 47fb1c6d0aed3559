"""``baseline``: scores the task's seed prompt and nothing else — the number every optimizer must beat."""

from __future__ import annotations

from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.run.context import RunContext


@register_optimizer("baseline")
class BaselineOptimizer(Optimizer):
    """Scores the seed prompt only (the runner always evaluates it first); proposes nothing."""

    needs_train_labels = False

    def run(self, ctx: RunContext) -> str | None:
        return None
