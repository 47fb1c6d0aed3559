"""``ape``: Automatic Prompt Engineer (Zhou et al., 2023, "Large Language Models Are Human-Level Prompt
Engineers").

1. *Induce*: the proposer sees ``n_demos`` train input→output pairs (a fresh random subset per sample) and
   writes the instruction that would produce them; ``n_prompts`` samples.
2. *Select*: candidates are raced on one dev sample (:mod:`promptopt.optimizers.racing`: stages of ``minibatch_size``,
   x ``race_growth``, ...; candidates significantly worse than the leader drop out between stages); the
   ``top_k`` survivors go on to the full dev split.
3. *Resample* (``resample_rounds`` > 0): the proposer writes ``n_resample`` paraphrases of each of the
   best full-dev candidates so far (APE's iterative Monte-Carlo search); they are selected the same way.

Budget plan (:mod:`promptopt.optimizers.planning`): before each screening asks the proposer, the
confirmations of up to ``top_k`` candidates on full dev are reserved, and only as many proposals are asked
as their proposer calls and worst-case races (every stage run) fit in the rest of the planned calls. A
resample round that cannot pay for one candidate and its confirmation is skipped, and the run ends
("budget planned out"). So the promoted candidates are always confirmed on full dev, and a budget that
cannot pay for the induction, one race and one confirmation is refused before anything is spent
(:meth:`APEOptimizer.min_calls`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from promptopt.core.candidate import Prompt
from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.optimizers.meta import Proposer, extract_instruction, format_example, render_meta_prompt
from promptopt.optimizers.planning import affordable, eval_cost, race_confirmations, race_worst_case, subprompts
from promptopt.optimizers.racing import Race, RaceTotals, RacingConfig, incumbents_of
from promptopt.run.context import EvalRequest, RunContext, RunState

if TYPE_CHECKING:
    from promptopt.core.task import Task
    from promptopt.run.history import TrialRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class APEConfig(RacingConfig):
    n_prompts: int = field(default=8, metadata={"min": 1, "help": "instructions induced in the first round"})
    n_demos: int = field(default=5, metadata={"min": 1, "help": "train pairs shown per induction"})
    minibatch_size: int = field(default=20, metadata={"min": 1, "help": "dev examples in the first race stage"})
    top_k: int = field(default=3, metadata={"min": 1, "help": "candidates promoted to the full dev split"})
    resample_rounds: int = field(default=1, metadata={"min": 0, "help": "paraphrase rounds after induction"})
    n_resample: int = field(default=4, metadata={"min": 1, "help": "paraphrases per promoted candidate"})
    temperature: float = field(default=0.9, metadata={"min": 0.0, "help": "proposer sampling temperature"})
    max_words: int = field(default=60, metadata={"min": 1, "help": "longer proposals are rejected"})
    max_tokens: int = field(default=96, metadata={"min": 1, "help": "proposer reply length"})


Phase = Literal["induce", "select", "resample", "done"]


@register_optimizer("ape")
class APEOptimizer(Optimizer):
    """APE: induce instructions from train demos, keep the best on dev, paraphrase them (resampling)."""

    Config = APEConfig
    config: APEConfig
    uses_proposer = True

    def min_calls(self, task: Task) -> int:
        """The induction's proposer calls, one candidate's race (every stage; without a race its full-dev
        evaluation, which is then its confirmation) and its confirmation on full dev (the race examples counted
        again: without a cache they are paid twice, so this is the worst case)."""
        c, seed, n_dev = self.config, task.seed_prompt(), len(task.dev)
        sizes = c.race_sizes(c.minibatch_size, n_dev)
        return c.n_prompts + (eval_cost(seed, sizes[-1]) if sizes else 0) + eval_cost(seed, n_dev)

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        c = self.config
        self.proposer = Proposer(ctx.proposer, temperature=c.temperature, max_tokens=c.max_tokens)
        dev = list(ctx.task.dev)
        self.sizes = c.race_sizes(c.minibatch_size, len(dev))
        self.minibatch = tuple(ctx.rng.sample(dev, self.sizes[-1])) if self.sizes else None
        self.phase: Phase = "induce"
        self.round = 0
        self.race: Race | None = None
        self.racing = RaceTotals()

    def propose(self, state: RunState) -> Sequence[Prompt | EvalRequest]:
        if self.phase == "induce":
            n = self._affordable(self.config.n_prompts, state)
            if not n:
                return self._planned_out(state)
            return self._screen(self._induce(n, state), state)
        if self.phase == "select":
            assert self.race is not None
            stage = self.race.requests()
            if stage:
                return stage
            self.racing.add(self.race)
            self.phase = "resample" if self.round < self.config.resample_rounds else "done"
            promoted = [p for p, _ in self.race.ranking()[: self.config.top_k]]
            if promoted:
                return promoted
            return self.propose(state)  # every candidate lost to its parent: go on with the next phase
        if self.phase == "resample":
            self.round += 1
            best = sorted(state.history.full(), key=lambda r: (-r.mean, r.trial))[: self.config.top_k]
            n = self._affordable(self.config.n_resample * len(best), state)
            if not n:
                return self._planned_out(state)
            return self._screen(self._resample([r.prompt for r in best], n, state), state)
        return []

    def observe(self, state: RunState, records: Sequence[TrialRecord]) -> None:
        if self.race is not None and self.phase == "select":
            for r in records:
                if not r.full:
                    self.race.record(r.prompt, r.result)

    # -- budget plan ----------------------------------------------------------------------------
    def _per_candidate(self, state: RunState) -> int:
        """Worst-case planned calls of one proposal: its proposer call and its race (every stage), or its
        full-dev evaluation when there is no race."""
        return 1 + race_worst_case(self.sizes, len(self.ctx.task.dev), subprompts(state.seed_record.prompt))

    def _reserve(self, n: int, state: RunState) -> int:
        """Planned calls kept for confirming up to ``top_k`` of ``n`` raced candidates on full dev."""
        k = subprompts(state.seed_record.prompt)
        return race_confirmations(self.ctx, self.sizes, n, self.config.top_k, k)

    def _affordable(self, wanted: int, state: RunState) -> int:
        """How many of ``wanted`` proposals this screening can pay for, confirmations reserved first."""
        fits = affordable(
            range(wanted),
            self.ctx.calls_left(),
            lambda _: self._per_candidate(state),
            lambda p: self._reserve(len(p), state),
        )
        if 0 < len(fits) < wanted:
            logger.info("APE round %d: %d of %d proposals asked, to fit the budget", self.round, len(fits), wanted)
        return len(fits)

    def _planned_out(self, state: RunState) -> list[Prompt | EvalRequest]:
        left, need = self.ctx.calls_left(), self._per_candidate(state) + self._reserve(1, state)
        state.stop_reason = (
            f"budget planned out: {left} call{'s' * (left != 1)} left, one more candidate needs {need} "
            "(its proposal, race and confirmation on full dev, worst case)"
        )
        self.phase = "done"
        return []

    # -- steps ----------------------------------------------------------------------------------
    def _screen(self, candidates: list[Prompt], state: RunState) -> list[Prompt | EvalRequest]:
        """Race new candidates on the dev sample (or go straight to full dev when dev is small); the parents'
        dev results take part in the race for free."""
        if not candidates:
            self.phase = "done"
            return []
        if self.minibatch is None:
            self.phase = "resample" if self.round < self.config.resample_rounds else "done"
            return list(candidates)
        parents = {p for c in candidates for p in c.parents}
        incumbents = incumbents_of(r for r in state.history.full() if r.prompt.id in parents)
        self.race = Race(candidates, self.minibatch, self.sizes, alpha=self.config.race_alpha, incumbents=incumbents)
        self.phase = "select"
        return list(self.race.requests())

    def _keep(self, texts: list[str], parent: Prompt, origin: str, state: RunState) -> list[Prompt]:
        seen = {r.prompt.instruction for r in state.history} | {parent.instruction}
        forbidden = [str(v) for ex in self.ctx.task.train for v in ex.inputs.values()]
        out: list[Prompt] = []
        for text in texts:
            ext = extract_instruction(text, max_words=self.config.max_words, forbidden=forbidden)
            if ext.instruction is None:
                state.reject(ext.reason or "invalid")
            elif ext.instruction in seen:
                state.reject("duplicate")
            else:
                seen.add(ext.instruction)
                out.append(parent.with_instruction(ext.instruction, origin=origin, step=state.step))
        return out

    def _induce(self, n: int, state: RunState) -> list[Prompt]:
        """``n`` inductions (``n_prompts``, or fewer when the budget plan says so)."""
        train = list(self.ctx.task.train)
        k = min(self.config.n_demos, len(train))
        metas = [
            render_meta_prompt("ape_induce", demos=[format_example(d) for d in self.ctx.rng.sample(train, k)])
            for _ in range(n)
        ]
        return self._keep(self.proposer.ask(metas), state.seed_record.prompt, "ape:induce", state)

    def _resample(self, parents: list[Prompt], n: int, state: RunState) -> list[Prompt]:
        """``n`` paraphrases (``n_resample`` per parent, or fewer when the budget plan says so: shared out as
        evenly as possible, the better parents first)."""
        out: list[Prompt] = []
        for i, parent in enumerate(parents):
            count = n // len(parents) + (i < n % len(parents))
            if not count:
                continue
            metas = [render_meta_prompt("ape_resample", instruction=parent.instruction)] * count
            out += self._keep(self.proposer.ask(metas), parent, "ape:resample", state)
        return out
