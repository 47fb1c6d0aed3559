"""``auto``: the CLI's default — demonstrations first, then the instruction, then (in process) a soft prompt.

The rule, in stages of one run (one evaluator, cache, budget and history; each stage builds on the best prompt
the run has confirmed so far):

1. **Demonstrations** — :mod:`~promptopt.optimizers.fewshot` (labeled and bootstrapped demos, k, inline vs chat
   turns) with up to ``fewshot_share`` of the calls left after the seed prompt. On small models this is the
   biggest and cheapest win, and it needs no proposer, so it works with any backend.
2. **Instruction search** — ``instruction_search`` (a preset or optimizer name; default ``pe2-compact``) on the
   best prompt so far: its beam starts from the run's best full-dev candidates, whose demos and demo format the
   children keep. It gets the rest of the budget, or ``search_share`` of it when a soft prompt follows. Skipped
   when what is left cannot pay its minimum (``min_calls``).
3. **Soft prompt** — ``soft_prompt`` (default preset ``soft-prompt``) trained under the best prompt so far, only
   for task models that can be trained in process (``capabilities.trainable``: ``smollm2``, ``hf:…``) and only
   when its share pays for at least ``soft_prompt_checkpoints`` full checkpoints (``eval_every`` training steps
   and a dev evaluation each): fewer steps than that rarely move a soft prompt away from its initialisation.

Without a call limit every stage runs with its own settings. The result's ``notes`` say what ran, with what
budget, and what was skipped and why.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from promptopt.optimizers.base import EvalRequest, Optimizer, OptimizerConfig, RunContext, RunState, register_optimizer
from promptopt.optimizers.fewshot import FewShotOptimizer
from promptopt.racing import RaceTotals

if TYPE_CHECKING:
    from promptopt.candidate import Prompt
    from promptopt.history import TrialRecord
    from promptopt.task import Task


@dataclass(frozen=True, kw_only=True)
class AutoConfig(OptimizerConfig):
    fewshot_share: float = field(default=0.75, metadata={"help": "share of the calls left after the seed for demos"})
    search_share: float = field(
        default=0.5, metadata={"help": "share of the rest for instruction search when a soft prompt may follow"}
    )
    instruction_search: str = field(default="pe2-compact", metadata={"help": "preset or optimizer; '' skips"})
    soft_prompt: str = field(default="soft-prompt", metadata={"help": "soft-prompt preset; '' skips"})
    soft_prompt_checkpoints: int = field(
        default=2, metadata={"min": 1, "help": "full checkpoints the soft prompt's share must pay for"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        from promptopt.exceptions import ConfigError

        for name in ("fewshot_share", "search_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"must be in (0, 1], got {getattr(self, name)!r}", field=name)


@register_optimizer("auto")
class AutoOptimizer(Optimizer):
    """Few-shot demos (with their format) first, then instruction search on the winner, then a soft prompt."""

    Config = AutoConfig
    config: AutoConfig
    uses_proposer = True

    def min_calls(self, task: Task) -> int:
        return FewShotOptimizer().min_calls(task)

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        self.racing = RaceTotals()
        self.notes = ()
        self.stage = 1  # 1 demonstrations, 2 instruction search, 3 soft prompt
        self.current: Optimizer | None = None
        self.soft: Optimizer | None = None
        self._start(FewShotOptimizer(), self.config.fewshot_share, "demonstrations")

    # -- the protocol ------------------------------------------------------------------------------------------
    def propose(self, state: RunState) -> Sequence[Prompt | EvalRequest]:
        while self.current is not None:
            proposals = self.current.propose(state)
            if proposals:
                return proposals
            self._next(state)
        return []

    def observe(self, state: RunState, records: Sequence[TrialRecord]) -> None:
        if self.current is not None:
            self.current.observe(state, records)

    def should_stop(self, state: RunState) -> bool:
        if self.current is None or not self.current.should_stop(state):
            return False
        if state.best().mean >= 1.0:
            return True  # nothing left to gain on dev
        self._next(state)
        return self.current is None

    # -- stages ------------------------------------------------------------------------------------------------
    def _next(self, state: RunState) -> None:
        """End the current stage and start the next one the rule allows."""
        if self.current is not None:
            ended = state.stop_reason or "finished"
            self._note(f"{self.current.name} ended: {ended}; best dev so far {state.best().mean:.3f}")
            state.stop_reason = None
            if self.current.racing is not None:
                self.racing.merge(self.current.racing)
            self.current = None
        c = self.config
        if self.stage == 1:  # decided once, before the instruction search takes its share
            self.soft = self._soft_prompt()
        soft = self.soft
        while self.current is None and self.stage < 3:
            self.stage += 1
            if self.stage == 2 and c.instruction_search:
                from promptopt.presets import load_optimizer

                share = c.search_share if soft is not None else 1.0
                self._start(load_optimizer(c.instruction_search), share, "instruction search on the best prompt")
            elif self.stage == 3 and soft is not None:
                self._start(soft, 1.0, "soft prompt under the best prompt")

    def _soft_prompt(self) -> Optimizer | None:
        """The soft-prompt stage, if the rule runs it (decided before the instruction search takes its share)."""
        c, model = self.config, self.ctx.evaluator.client.model
        if not c.soft_prompt:
            return None
        if not model.capabilities.trainable:
            self._note(f"soft prompt skipped: the task model {model.name!r} cannot be trained in process")
            return None
        from promptopt.optimizers.soft_prompt import SoftPromptOptimizer
        from promptopt.presets import load_optimizer

        soft = load_optimizer(c.soft_prompt, start_from="best")
        assert isinstance(soft, SoftPromptOptimizer)
        left = self.ctx.calls_left()
        share = left if left is None or not c.instruction_search else int(left * (1 - c.search_share))
        needed = c.soft_prompt_checkpoints * soft.checkpoint_calls(self.ctx.task)
        if share is not None and share < needed:
            self._note(
                f"soft prompt skipped: its share ({share} calls) pays for fewer than {c.soft_prompt_checkpoints} "
                f"checkpoints ({needed} calls)"
            )
            return None
        return soft

    def _start(self, optimizer: Optimizer, share: float, what: str) -> None:
        left = self.ctx.calls_left()
        needed = optimizer.min_calls(self.ctx.task)
        if left is not None and left < max(needed, 1):
            self._note(f"{what} ({optimizer.name}) skipped: {left} planned calls left, it needs at least {needed}")
            return
        cap = None
        if left is not None:
            give = min(left, max(needed, int(left * share)))
            cap = self.ctx.evaluator.client.budget.planned + give
            self._note(f"{what}: {optimizer.name} with up to {give} of {left} calls left")
        else:
            self._note(f"{what}: {optimizer.name} (no call limit)")
        optimizer.setup(dataclasses.replace(self.ctx, planned_cap=cap))
        self.current = optimizer

    def _note(self, text: str) -> None:
        self.notes = (*self.notes, text)
