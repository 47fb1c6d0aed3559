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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.optimizers.induction import induce, induction_prompts
from promptopt.optimizers.planning import affordable, eval_cost, race_confirmations, race_worst_case, subprompts
from promptopt.optimizers.proposer import Proposer, render_meta_prompt
from promptopt.optimizers.racing import Race, RaceTotals, RacingConfig, incumbents_of, race_trials
from promptopt.optimizers.screening import screen_reply

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.core.task import Task
    from promptopt.run.context import RunContext

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

    def run(self, ctx: RunContext) -> str | None:
        """Induce, select, then ``resample_rounds`` rounds of resample and select (the module docstring's steps)."""
        c = self.config
        self.ctx = ctx
        self.proposer = Proposer(
            ctx.proposer, temperature=c.temperature, max_tokens=c.max_tokens, before_call=ctx.stop_if_asked
        )
        dev = list(ctx.task.dev)
        self.sizes = c.race_sizes(c.minibatch_size, len(dev))
        self.minibatch = tuple(ctx.rng.sample(dev, self.sizes[-1])) if self.sizes else None
        """The dev sample every race runs on (None: dev too small to race on)."""
        self.racing = RaceTotals()
        # 1. induce: instructions from train demos
        n = self._affordable(c.n_prompts, round_=0)
        if not n:
            return self._planned_out()
        seed = ctx.seed_record.prompt
        replies = induce(self.proposer, induction_prompts(ctx.task.train, n, n_demos=c.n_demos, rng=ctx.rng))
        candidates = self._keep(replies, seed, "ape:induce")
        if not candidates:
            return None
        # 2. select: race on the dev sample, the top_k survivors to full dev
        self._select(candidates)
        # 3. resample: paraphrases of the best so far, selected the same way
        for round_ in range(1, c.resample_rounds + 1):
            best = sorted(ctx.history.full(), key=lambda r: (-r.mean, r.trial))[: c.top_k]
            n = self._affordable(c.n_resample * len(best), round_=round_)
            if not n:
                return self._planned_out()
            candidates = self._resample([r.prompt for r in best], n)
            if not candidates:
                return None
            self._select(candidates)
        return None

    # -- steps ----------------------------------------------------------------------------------
    def _keep(self, texts: list[str], parent: Prompt, origin: str) -> list[Prompt]:
        """Screen replies (extraction and duplicates, not the meta family's chatter checks) into children."""
        ctx = self.ctx
        seen = {r.prompt.instruction for r in ctx.history} | {parent.instruction}
        forbidden = [str(v) for ex in ctx.task.train for v in ex.inputs.values()]
        max_words = self.config.max_words
        out: list[Prompt] = []
        for text in texts:
            s = screen_reply(text, parent, seen=seen, max_words=max_words, forbidden=forbidden, strict=False)
            if s.instruction is None:
                ctx.reject(s.reason or "invalid")
            else:
                seen.add(s.instruction)
                out.append(parent.with_instruction(s.instruction, origin=origin, step=ctx.next_step))
        return out

    def _select(self, candidates: list[Prompt]) -> None:
        """Race new candidates on the dev sample (the parents' dev results take part for free) and confirm the
        ``top_k`` survivors on full dev; without a race every candidate goes straight to full dev."""
        ctx = self.ctx
        if self.minibatch is None:
            ctx.evaluate_all(candidates)
            return
        parents = {p for cand in candidates for p in cand.parents}
        incumbents = incumbents_of(r for r in ctx.history.full() if r.prompt.id in parents)
        race = Race(candidates, self.minibatch, self.sizes, alpha=self.config.race_alpha, incumbents=incumbents)
        race_trials(ctx, race)
        assert self.racing is not None
        self.racing.add(race)
        promoted = [p for p, _ in race.ranking()[: self.config.top_k]]
        if promoted:  # else every candidate lost to its parent
            ctx.evaluate_all(promoted)

    def _resample(self, parents: list[Prompt], n: int) -> list[Prompt]:
        """``n`` paraphrases (``n_resample`` per parent, or fewer when the budget plan says so: shared out as
        evenly as possible, the better parents first)."""
        out: list[Prompt] = []
        for i, parent in enumerate(parents):
            count = n // len(parents) + (i < n % len(parents))
            if not count:
                continue
            metas = [render_meta_prompt("ape_resample", instruction=parent.instruction)] * count
            out += self._keep(self.proposer.ask(metas), parent, "ape:resample")
        return out

    # -- budget plan ----------------------------------------------------------------------------
    def _per_candidate(self) -> int:
        """Worst-case planned calls of one proposal: its proposer call and its race (every stage), or its
        full-dev evaluation when there is no race."""
        return 1 + race_worst_case(self.sizes, len(self.ctx.task.dev), subprompts(self.ctx.seed_record.prompt))

    def _reserve(self, n: int) -> int:
        """Planned calls kept for confirming up to ``top_k`` of ``n`` raced candidates on full dev."""
        k = subprompts(self.ctx.seed_record.prompt)
        return race_confirmations(self.ctx, self.sizes, n, self.config.top_k, k)

    def _affordable(self, wanted: int, *, round_: int) -> int:
        """How many of ``wanted`` proposals this screening can pay for, confirmations reserved first."""
        fits = affordable(
            range(wanted), self.ctx.calls_left(), lambda _: self._per_candidate(), lambda p: self._reserve(len(p))
        )
        if 0 < len(fits) < wanted:
            logger.info("APE round %d: %d of %d proposals asked, to fit the budget", round_, len(fits), wanted)
        return len(fits)

    def _planned_out(self) -> str:
        left, need = self.ctx.calls_left(), self._per_candidate() + self._reserve(1)
        return (
            f"budget planned out: {left} call{'s' * (left != 1)} left, one more candidate needs {need} "
            "(its proposal, race and confirmation on full dev, worst case)"
        )
