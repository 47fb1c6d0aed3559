"""``ics``: In-Context Sampling search (Yao et al., 2024) over K × shots × strategy × aggregation.

Every combination of the configured ``ks``, ``shots``, ``strategies``, ``aggregations`` and ``demo_formats``
(demos inline or as chat turns in every sub-prompt) becomes an ICS prompt around the seed instruction
(:func:`promptopt.prompts.ics.make_ics_prompt`, demos from the train split; K = 1 is a plain in-context-learning
prompt).
They are screened on one dev minibatch, cheapest (smallest K × shots) first, and the ``top_k`` go on to the full
dev split. The budget is planned (:mod:`promptopt.optimizers.planning`): the confirmations of the ``top_k`` are
reserved first and only the candidates the rest pays for are screened, so a tight budget screens the cheap ones
and still confirms them. ``vote`` and ``confidence`` over the same demo sets share their model calls through the
cache.

With ``robust`` = ``mean`` or ``worst`` a candidate's screening score is the mean or the minimum over
``n_robust_formats`` FormatSpread formats (:mod:`promptopt.prompts.formats`) instead of its score as written — or,
with ``robust_over: paraphrases``, over rule-based paraphrases of its instruction (:mod:`promptopt.prompts.paraphrase`).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from promptopt.core.candidate import SEARCHED_DEMO_FORMATS, DemoFormat, Prompt
from promptopt.core.exceptions import ConfigError
from promptopt.core.sampling import AGGREGATIONS, STRATEGIES, Aggregation, Strategy
from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.optimizers.config import OptimizerConfig
from promptopt.optimizers.planning import affordable, eval_cost, subprompts, top_confirmation_cost
from promptopt.prompts.formats import Robust, robust_score
from promptopt.prompts.ics import make_ics_prompt
from promptopt.prompts.paraphrase import RobustOver, robust_variants
from promptopt.run.context import EvalRequest, RunContext

if TYPE_CHECKING:
    from promptopt.core.task import Task
    from promptopt.run.history import TrialRecord


class TupleSettingsMixin(Optimizer):
    """For configs with tuple fields: ``to_config`` gives JSON values (lists), as config.json stores them, so
    a resumed run's settings compare equal to the saved ones."""

    def to_config(self) -> dict[str, Any]:
        return json.loads(json.dumps(super().to_config()))


@dataclass(frozen=True, kw_only=True)
class ICSConfig(OptimizerConfig):
    ks: tuple[int, ...] = field(default=(1, 3, 5), metadata={"min": 1, "help": "numbers of sub-prompts K to try"})
    shots: tuple[int, ...] = field(default=(2, 4), metadata={"min": 1, "help": "demos per sub-prompt to try"})
    strategies: tuple[Strategy, ...] = field(default=STRATEGIES, metadata={"help": "random, similar, diverse"})
    aggregations: tuple[Aggregation, ...] = field(default=AGGREGATIONS, metadata={"help": "vote, confidence"})
    demo_formats: tuple[DemoFormat, ...] = field(default=SEARCHED_DEMO_FORMATS, metadata={"help": "inline, turns, …"})
    embedder: str = field(default="auto", metadata={"help": "auto, minilm or tfidf (similar/diverse)"})
    minibatch_size: int = field(default=20, metadata={"min": 1, "help": "dev examples for screening"})
    top_k: int = field(default=3, metadata={"min": 1, "help": "candidates promoted to the full dev split"})
    robust: Robust = field(default="none", metadata={"help": "none, or mean/worst over formats"})
    n_robust_formats: int = field(default=4, metadata={"min": 2, "help": "variants for the robust objective"})
    robust_over: RobustOver = field(default="formats", metadata={"help": "formats | paraphrases (of the instruction)"})

    def variants(self) -> int:
        """Formats each candidate is scored in (the robust objective's)."""
        return self.n_robust_formats if self.robust != "none" else 1


@register_optimizer("ics")
class ICSOptimizer(TupleSettingsMixin, Optimizer):
    """In-Context Sampling: K prompts with different demo subsets, aggregated; searches K × shots × strategy."""

    Config = ICSConfig
    config: ICSConfig

    def min_calls(self, task: Task) -> int:
        """The cheapest candidate screened, then confirmed on full dev (worst case: no cache)."""
        c = self.config
        k = min(c.ks)
        return k * (min(c.minibatch_size, len(task.dev)) * c.variants() + len(task.dev))

    def run(self, ctx: RunContext) -> str | None:
        self.ctx, c = ctx, self.config
        dev = list(ctx.task.dev)
        self.minibatch = tuple(ctx.rng.sample(dev, c.minibatch_size)) if len(dev) > c.minibatch_size else tuple(dev)
        aggregations = [a for a in c.aggregations if a == "vote" or ctx.evaluator.resolved_mode == "score"]
        if not aggregations:
            raise ConfigError("aggregation 'confidence' needs label scoring; add 'vote'.", field="aggregations")
        seed_prompt = ctx.task.seed_prompt()
        combos = sorted(itertools.product(c.ks, c.shots, c.strategies, aggregations), key=lambda x: (x[0] * x[1], x[0]))
        self.candidates: list[Prompt] = []
        seen: set[str] = set()
        for (k, shots, strategy, aggregation), demo_format in itertools.product(combos, c.demo_formats):
            if k == 1 and aggregation != aggregations[0]:
                continue  # one sub-prompt: nothing to aggregate
            p = make_ics_prompt(
                seed_prompt,
                ctx.task.train,
                k=k,
                shots=min(shots, len(ctx.task.train)),
                strategy=strategy,
                aggregation=aggregation,
                seed=ctx.seed,
                embedder=c.embedder,
            )
            p = replace(p, demo_format=demo_format, meta={**p.meta, "demo_format": demo_format})
            if p.id not in seen:
                seen.add(p.id)
                self.candidates.append(p)
        self.variants = {
            p.id: robust_variants(p, ctx.task, c.n_robust_formats, seed=ctx.seed, over=c.robust_over)
            if c.robust != "none"
            else [p]
            for p in self.candidates
        }
        # screen the candidates the budget pays for (cheapest first) on one dev minibatch, in every format
        screened = self._plan()
        if not screened:
            return None
        records = ctx.evaluate_all([EvalRequest(v, self.minibatch) for p in screened for v in self.variants[p.id]])
        scores = self._scores(records)
        # confirm the top_k on the full dev split
        ranked = sorted(screened, key=lambda p: -scores.get(p.id, float("-inf")))
        ctx.evaluate_all(ranked[: c.top_k])
        return None

    def _plan(self) -> list[Prompt]:
        """The cheapest-first candidates whose screening, plus confirming the dearest ``top_k`` of them on full
        dev, fits in the planned budget."""
        n, per = len(self.minibatch), self.config.variants()

        def confirm(p: Prompt) -> int:
            return self.ctx.confirmation_cost(n, subprompts(p))

        return affordable(
            self.candidates,
            self.ctx.calls_left(),
            lambda p: eval_cost(p, n) * per,
            lambda prefix: top_confirmation_cost(prefix, self.config.top_k, confirm),
        )

    def _scores(self, records: Sequence[TrialRecord]) -> dict[str, float]:
        """Each candidate's screening score: the robust objective over its formats' minibatch means."""
        by_id = {r.prompt.id: r.mean for r in records if r.status == "complete"}
        scores = {}
        for p in self.candidates:
            means = [by_id[v.id] for v in self.variants[p.id] if v.id in by_id]
            if len(means) == len(self.variants[p.id]):
                scores[p.id] = robust_score(means, self.config.robust)
        return scores
