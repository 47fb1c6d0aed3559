"""``auto``: the CLI's default — demonstrations first, then a soft prompt (in process) or the instruction.

The rule, in stages of one run (one evaluator, cache, budget and history; each stage builds on the best prompt
the run has confirmed so far):

1. **Demonstrations** — :mod:`~promptopt.optimizers.fewshot` (labeled and bootstrapped demos, k, inline vs chat
   turns). On small models this is the biggest and cheapest win, and it needs no proposer, so it works with any
   backend. It gets ``fewshot_share`` of the calls left after the seed prompt, or, when a soft prompt follows,
   what the soft prompt's reservation leaves.
2. **Soft prompt** — ``soft_prompt`` (default preset ``soft-prompt``) trained under the best prompt so far if
   its paired dev gain over the seed prompt is significant, else under the seed prompt (``start_from:
   significant``: a demo set that wins by an example or two on 32 dev examples is often a dev artefact), for
   task models that can be trained in process (``capabilities.trainable``: ``smollm2``, ``hf:…``). Its share is
   reserved before the demonstrations start: ``soft_prompt_share`` of the calls left, and at least
   ``soft_prompt_checkpoints`` full checkpoints (``eval_every`` training steps and a dev evaluation each) —
   fewer steps than that rarely move a soft prompt away from its initialisation. Skipped when the reservation
   would leave the demonstrations less than their minimum.
3. **Instruction search** — ``instruction_search`` (a preset or optimizer name; default ``pe2-compact``) on the
   best prompt so far, when no soft prompt was trained: its beam starts from the run's best full-dev
   candidates, whose demos and demo format the children keep. It gets the rest of the budget and is skipped
   when that cannot pay its minimum (``min_calls``).

Why soft prompt before (and instead of) instruction search for in-process models: on 12 held-out tasks with
SmolLM2-135M as task model and proposer (``benchmarks/results/fewshot.md``), a soft prompt alone beat the
demonstrations on 4 of the 5 tasks where both ran, while the instruction search after the demonstrations
changed the best prompt on 2 tasks and lost test score on both (dev overfitting on 32 examples). Why the soft
prompt's share is three quarters: with half, the demonstrations' stage took calls the soft prompt needed — at 400
calls ``auto`` scored below the soft prompt alone on 6 of the 8 tasks where that beat the seed (sst2 0.78 vs 0.88);
with 0.75 the demonstrations still ran their first race and the soft prompt trained for more steps under the winner.

Without a call limit every stage runs with its own settings. The result's ``notes`` say what ran, with what
budget, and what was skipped and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.optimizers.config import OptimizerConfig
from promptopt.optimizers.fewshot import FewShotOptimizer
from promptopt.optimizers.racing import RaceTotals
from promptopt.run.context import RunContext

if TYPE_CHECKING:
    from promptopt.core.task import Task


@dataclass(frozen=True, kw_only=True)
class AutoConfig(OptimizerConfig):
    fewshot_share: float = field(default=0.75, metadata={"help": "share of the calls left after the seed for demos"})
    soft_prompt_share: float = field(
        default=0.75, metadata={"help": "share of the calls left after the seed reserved for a soft prompt"}
    )
    instruction_search: str = field(default="pe2-compact", metadata={"help": "preset or optimizer; '' skips"})
    soft_prompt: str = field(default="soft-prompt", metadata={"help": "soft-prompt preset; '' skips"})
    soft_prompt_checkpoints: int = field(
        default=2, metadata={"min": 1, "help": "full checkpoints the soft prompt's share must pay for"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        from promptopt.core.exceptions import ConfigError

        for name in ("fewshot_share", "soft_prompt_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"must be in (0, 1], got {getattr(self, name)!r}", field=name)


@register_optimizer("auto")
class AutoOptimizer(Optimizer):
    """Few-shot demos (with their format) first, then a soft prompt (in process) or instruction search on the winner."""

    Config = AutoConfig
    config: AutoConfig
    uses_proposer = True

    def min_calls(self, task: Task) -> int:
        return FewShotOptimizer().min_calls(task)

    def run(self, ctx: RunContext) -> str | None:
        self.ctx = ctx
        self.racing = RaceTotals()
        self.notes = ()
        stages = self._plan()
        while stages:
            optimizer, share, keep, what = stages.pop(0)
            stage = self._start(optimizer, share, keep, what)
            if stage is None:
                continue
            ctx.state.stop_reason = None  # an ask/tell stage reports its stop here
            ended = optimizer.run(stage) or "finished"
            self.notes = (*self.notes, *optimizer.notes)
            self._note(f"{optimizer.name} ended: {ended}; best dev so far {ctx.best().mean:.3f}")
            if optimizer.racing is not None:
                self.racing.merge(optimizer.racing)
            if stages and ctx.best().mean >= 1.0:
                return f"{ended} (nothing left to gain on dev)"
        return None

    # -- stages ------------------------------------------------------------------------------------------------
    def _plan(self) -> list[tuple[Optimizer, float, int, str]]:
        """The stages to run: each with its share of the calls left when it starts and the calls it must leave
        for the stages after it."""
        c = self.config
        fewshot = FewShotOptimizer()
        soft = self._soft_prompt(fewshot)
        if soft is not None:
            optimizer, reserved = soft
            # demos that tie the seed in their first race leave the rest to the soft prompt (fewshot give_up)
            return [
                (FewShotOptimizer(give_up=True), 1.0, reserved, "demonstrations"),
                (optimizer, 1.0, 0, "soft prompt"),
            ]
        stages: list[tuple[Optimizer, float, int, str]] = [(fewshot, c.fewshot_share, 0, "demonstrations")]
        if c.instruction_search:
            from promptopt.optimizers.presets import load_optimizer

            stages.append((load_optimizer(c.instruction_search), 1.0, 0, "instruction search on the best prompt"))
        return stages

    def _soft_prompt(self, fewshot: Optimizer) -> tuple[Optimizer, int] | None:
        """The soft-prompt stage and the calls reserved for it, if the rule runs it."""
        c, model = self.config, self.ctx.task_model
        if not c.soft_prompt:
            return None
        if not model.capabilities.trainable:
            self._note(f"soft prompt skipped: the task model {model.name!r} cannot be trained in process")
            return None
        from promptopt.optimizers.presets import load_optimizer
        from promptopt.optimizers.soft_prompt import SoftPromptOptimizer

        soft = load_optimizer(c.soft_prompt, start_from="significant")
        assert isinstance(soft, SoftPromptOptimizer)
        left = self.ctx.calls_left()
        if left is None:
            return soft, 0
        needed = c.soft_prompt_checkpoints * soft.checkpoint_calls(self.ctx.task)
        reserved = max(needed, int(left * c.soft_prompt_share))
        if left - reserved < fewshot.min_calls(self.ctx.task):
            self._note(
                f"soft prompt skipped: {c.soft_prompt_checkpoints} checkpoints ({needed} calls) leave the "
                f"demonstrations less than their minimum of the {left} calls left"
            )
            return None
        return soft, reserved

    def _start(self, optimizer: Optimizer, share: float, keep: int, what: str) -> RunContext | None:
        """The context a stage runs in (its share of the calls left), or None when it cannot run."""
        left = self.ctx.calls_left()
        needed = optimizer.min_calls(self.ctx.task)
        if left is not None and left < max(needed, 1):
            self._note(f"{what} ({optimizer.name}) skipped: {left} planned calls left, it needs at least {needed}")
            return None
        if left is None:
            self._note(f"{what}: {optimizer.name} (no call limit)")
            return self.ctx
        give = min(left - keep, max(needed, int(left * share)))
        self._note(f"{what}: {optimizer.name} with up to {give} of {left} calls left")
        return self.ctx.capped(give)

    def _note(self, text: str) -> None:
        self.notes = (*self.notes, text)
