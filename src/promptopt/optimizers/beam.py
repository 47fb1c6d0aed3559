"""The search the meta-prompt family (``pe2``, ``apo``, ``opro``) shares: :class:`BeamSearchOptimizer`.

Beam selection over full-dev scores (:func:`select_beam`), failures from a train batch per parent, racing of
children on growing dev minibatches (:mod:`promptopt.optimizers.racing`) before the full dev split, and the
optimization history of a prompt's lineage (:func:`lineage`), and the budget plan that sizes each step
(:class:`StepPlan`). Each member only writes its meta-prompts (:meth:`BeamSearchOptimizer.children`).
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from promptopt.optimizers.base import Optimizer
from promptopt.optimizers.planning import affordable, eval_cost, subprompts
from promptopt.optimizers.proposer import Failure, Proposer, sample_failures
from promptopt.optimizers.racing import Race, RaceTotals, RacingConfig, incumbents_of, race_trials
from promptopt.optimizers.screening import screen_proposals, word_edit_distance
from promptopt.run.context import EvalRequest

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.core.data import Example
    from promptopt.core.messages import Message
    from promptopt.core.task import Task
    from promptopt.run.context import RunContext
    from promptopt.run.history import History, TrialRecord

logger = logging.getLogger(__name__)

SOLVED = "a prompt scored 1.0 on dev"


def select_beam(history: History, k: int) -> list[TrialRecord]:
    """The ``k`` best full-dev candidates so far, best first (ties: the earlier trial)."""
    return sorted(history.full(), key=lambda r: (-r.mean, r.trial))[:k]


def score_on(record: TrialRecord, examples: Sequence[Example]) -> float | None:
    """``record``'s mean score on ``examples`` from its per-example results (None if any is missing)."""
    if record.result is None:
        return None
    scores = record.result.by_example
    if not examples or any(ex.id not in scores for ex in examples):
        return None
    return sum(scores[ex.id] for ex in examples) / len(examples)


@dataclass(frozen=True)
class Edit:
    """One accepted edit on a prompt's lineage, as the optimization history ("momentum") shows it."""

    step: int
    before: str
    after: str
    words: int
    score_before: float
    score_after: float


def lineage(record: TrialRecord, history: History, *, limit: int) -> list[Edit]:
    """The last ``limit`` edits that led to ``record`` (oldest first), with full-dev scores before/after.

    ``step`` is the child's ``meta["round"]`` (the optimizer's step) when recorded, else its trial step.
    """
    by_id = {r.prompt.id: r for r in history.full()}
    edits: list[Edit] = []
    cur = record
    while cur.prompt.parents and (parent := by_id.get(cur.prompt.parents[0])) is not None and len(edits) < limit:
        words = cur.prompt.meta.get("edit_words")
        edits.append(
            Edit(
                step=int(cur.prompt.meta.get("round", cur.step)),
                before=parent.prompt.instruction,
                after=cur.prompt.instruction,
                words=int(words)
                if words is not None
                else word_edit_distance(parent.prompt.instruction, cur.prompt.instruction),
                score_before=parent.mean,
                score_after=cur.mean,
            )
        )
        cur = parent
    return edits[::-1]


@dataclass(frozen=True, kw_only=True)
class SearchConfig(RacingConfig):
    """Settings of the beam search shared by the meta-prompt family."""

    n_steps: int = field(default=4, metadata={"min": 1, "help": "optimization steps; each expands the beam once"})
    beam_size: int = field(default=2, metadata={"min": 1, "help": "best full-dev candidates a step builds on"})
    minibatch_size: int = field(
        default=10, metadata={"min": 0, "help": "dev examples in the first race stage before full dev (0: no race)"}
    )
    n_promote: int = field(default=2, metadata={"min": 1, "help": "children per step promoted to full dev"})
    min_gain: float | None = field(
        default=0.0,
        metadata={"help": "promote only children beating their parent on the race by more than this (None: all)"},
    )
    temperature: float = field(default=0.7, metadata={"min": 0.0, "help": "proposer sampling temperature"})
    max_tokens: int = field(default=96, metadata={"min": 1, "help": "proposer reply length for a new prompt"})
    max_words: int = field(default=50, metadata={"min": 1, "help": "longer proposals are rejected"})


FailureSplit = Literal["train", "dev"]


@dataclass(frozen=True, kw_only=True)
class FailureSearchConfig(SearchConfig):
    """:class:`SearchConfig` plus where the failures shown to the proposer come from."""

    n_failures: int = field(default=2, metadata={"min": 1, "help": "failures shown per proposal (PE2's batch size)"})
    failure_split: FailureSplit = field(
        default="train",
        metadata={"help": "'train': run each parent on a train batch to find failures; 'dev': reuse its dev errors"},
    )
    failure_pool: int = field(default=16, metadata={"min": 1, "help": "train examples each parent is run on"})


@dataclass(frozen=True)
class StepPlan:
    """One step of :class:`BeamSearchOptimizer` as the budget plan sizes it: the first ``parents`` of the beam,
    the config :meth:`~BeamSearchOptimizer.children` runs with (the run's, or one asking fewer proposals), and
    the step's worst case (every proposal accepted, every child racing every stage)."""

    parents: int
    config: SearchConfig
    children: int
    proposer_calls: int
    cost: int
    """Planned calls: failure runs of new parents, proposer calls, races and confirmations on full dev."""


class BeamSearchOptimizer(Optimizer):
    """Beam search over instructions with minibatch racing, shared by pe2, apo and opro.

    Each step: take the ``beam_size`` best full-dev candidates so far (the seed included: a child never
    replaces its parent unless it scores higher — PE2's back-tracking), optionally run each new parent
    on a train batch to collect failures (``uses_failures``), ask :meth:`children` for new candidates,
    race them on a fresh dev sample (stages of ``minibatch_size``, x ``race_growth``, ... below the dev
    size; children significantly worse than the leader — the parents take part for free — are dropped
    between stages) and evaluate the ``n_promote`` best survivors on the full dev split. A child is only
    promoted if it beats its parent by more than ``min_gain`` on the race examples (the parent's
    per-example dev results give that score for free). ``race_stages=1`` races on one fixed minibatch.
    Stops after ``n_steps`` or when a prompt scores 1.0 on dev. Subclasses implement :meth:`children` only;
    children record the optimization step (``meta["round"]``) and the measured edit size
    (``meta["edit_words"]``).

    Budget plan (:mod:`promptopt.optimizers.planning`): before each step, its worst case — failure runs of
    new parents, proposer calls, every child racing every stage, and the confirmations of the ``n_promote``
    best on full dev — must fit in the planned calls left. If it does not, the step is shrunk to the largest
    that fits (fewer parents, fewer proposals: :meth:`step_knobs`, :meth:`step_shape`); if not even one
    parent with one child fits, the search ends ("budget planned out"). So promoted children are always
    confirmed on full dev, and a budget below :meth:`min_calls` is refused before anything is spent.
    """

    Config = SearchConfig
    config: SearchConfig
    uses_proposer = True
    uses_failures: ClassVar[bool] = False
    proposer_calls_per_child: ClassVar[int] = 1
    """Proposer calls a child costs, for a member :meth:`step_shape` does not know (one child per parent is then
    assumed); pe2, apo and opro are described there from their :meth:`children`."""

    def run(self, ctx: RunContext) -> str | None:
        """``n_steps`` steps of beam search; ends early on a perfect dev score, or when the budget plan cannot pay
        for one more child."""
        c = self.config
        self.ctx = ctx
        self.proposer = Proposer(
            ctx.proposer, temperature=c.temperature, max_tokens=c.max_tokens, before_call=ctx.stop_if_asked
        )
        self.forbidden = frozenset(str(v) for ex in (*ctx.task.train, *ctx.task.dev) for v in ex.inputs.values())
        self.racing = RaceTotals()
        self.failure_runs: dict[str, TrialRecord] = {}
        """Each beam parent's run on its train batch (prompt id -> record), made once."""
        self.seen: set[str] = set()
        for self.round in range(1, c.n_steps + 1):  # the step children record as meta["round"]
            if ctx.best().mean >= 1.0:
                return SOLVED
            # 1. the beam: the best full-dev candidates so far, the step sized to the budget left
            beam = select_beam(ctx.history, c.beam_size) or [ctx.seed_record]
            plan = self._plan_step(beam)
            if isinstance(plan, str):
                return plan  # not even one child fits: the search ends
            parents = beam[: plan.parents]
            # 2. failures: each new parent is run once on a train batch (failure_split="train")
            self._run_on_train(parents)
            # 3. expand: the member's meta-prompts write children, screened against everything seen so far
            self.seen = {r.prompt.instruction for r in ctx.history}
            kids = self._affordable_children(self.children(parents, plan.config))
            if not kids:
                continue
            # 4. race the children on a fresh dev sample, 5. confirm the best on the full dev split
            confirm = self._race(kids, parents)
            if confirm:
                ctx.evaluate_all(confirm)
        return SOLVED if ctx.best().mean >= 1.0 else None

    # -- for subclasses ---------------------------------------------------------------------------
    def children(self, parents: Sequence[TrialRecord], config: SearchConfig) -> list[Prompt]:
        """New candidates built from ``parents`` (best first) with the step's ``config`` (the run's, or one the
        budget plan shrank: :meth:`step_knobs`); screen them with :meth:`screen`."""
        raise NotImplementedError

    def failure_batch(self, parent: TrialRecord) -> list[Failure]:
        """A fresh sample of ``n_failures`` failures of ``parent`` (from its train batch or its dev results)."""
        c = self.config
        if not isinstance(c, FailureSearchConfig):
            raise TypeError(f"{type(self).__name__}.failure_batch needs a FailureSearchConfig")
        if c.failure_split == "train":
            record, examples = self.failure_runs.get(parent.prompt.id), self.ctx.task.train
        else:
            record, examples = parent, self.ctx.task.dev
        return sample_failures(record, examples, c.n_failures, self.ctx.rng) if record is not None else []

    def screen(
        self,
        texts: Sequence[str],
        parent: Prompt,
        *,
        origin: str,
        step_size: int | None = None,
        tags: Sequence[str] = ("prompt",),
        cue: str | None = None,
        metas: Sequence[Mapping[str, Any]] | None = None,
        meta_prompts: Sequence[Sequence[Message]] | None = None,
    ) -> list[Prompt]:
        """:func:`~promptopt.optimizers.screening.screen_proposals` with this run's seen set, word limit and
        forbidden inputs; children record the step (``meta["round"]``) and the trial step they are raced in."""
        metas = [{"round": self.round, **m} for m in (metas if metas is not None else [{}] * len(texts))]
        return screen_proposals(
            texts,
            parent,
            self.ctx.state,
            origin=origin,
            seen=self.seen,
            max_words=self.config.max_words,
            forbidden=self.forbidden,
            step_size=step_size,
            tags=tags,
            cue=cue,
            metas=metas,
            meta_prompts=meta_prompts,
            step=self.ctx.next_step,
        )

    # -- the steps of run() -------------------------------------------------------------------------
    def _run_on_train(self, parents: Sequence[TrialRecord]) -> None:
        """Run each parent not run yet on ``failure_pool`` train examples (one step), to find its failures."""
        c = self.config
        if not self.uses_failures or not isinstance(c, FailureSearchConfig) or c.failure_split != "train":
            return
        train = list(self.ctx.task.train)
        runs = [
            EvalRequest(p.prompt, tuple(self.ctx.rng.sample(train, min(c.failure_pool, len(train)))))
            for p in parents
            if p.prompt.id not in self.failure_runs
        ]
        if runs:
            for r in self.ctx.evaluate_all(runs):
                if not r.full and r.result is not None:
                    self.failure_runs[r.prompt.id] = r

    def _affordable_children(self, kids: list[Prompt]) -> list[Prompt]:
        """The children whose race and confirmation still fit (all of them when :meth:`step_shape` is right: the
        step was planned for its worst case; a guard for members that under-state it)."""
        if not kids:
            return kids
        n_dev = len(self.ctx.task.dev)
        sizes = self._race_sizes(n_dev)
        if sizes:
            n_promote = self.config.n_promote

            def reserve(chosen: Sequence[Prompt]) -> int:
                return min(n_promote, len(chosen)) * self._confirmation(max(subprompts(p) for p in chosen))

            fits = affordable(kids, self.ctx.calls_left(), lambda p: eval_cost(p, sizes[-1]), reserve)
        else:  # no race: each child is evaluated on full dev, which is its confirmation
            fits = affordable(kids, self.ctx.calls_left(), lambda p: eval_cost(p, n_dev), lambda _: 0)
        if len(fits) < len(kids):
            logger.warning(
                "%d of %d children left out: the step cost more than planned", len(kids) - len(fits), len(kids)
            )
        return fits

    def _race(self, kids: list[Prompt], parents: Sequence[TrialRecord]) -> list[Prompt]:
        """Race ``kids`` on a fresh dev sample (the parents take part for free); the ones to confirm on full dev.
        Without a race (dev too small) every child goes to full dev."""
        c = self.config
        dev = list(self.ctx.task.dev)
        sizes = self._race_sizes(len(dev))
        if not sizes:
            return kids
        minibatch = tuple(self.ctx.rng.sample(dev, sizes[-1]))
        race = Race(kids, minibatch, sizes, alpha=c.race_alpha, incumbents=incumbents_of(parents))
        race_trials(self.ctx, race)
        totals = self.racing
        assert totals is not None
        summary = totals.add(race)
        logger.info(
            "race %d: %d of %d children dropped early; %d evaluations saved so far",
            totals.races,
            summary["dropped"],
            summary["candidates"],
            totals.saved,
        )
        return self._promote(race, kids, minibatch)

    def _promote(self, race: Race, kids: Sequence[Prompt], minibatch: Sequence[Example]) -> list[Prompt]:
        """The ``n_promote`` best survivors that beat their parent on the race examples by more than ``min_gain``."""
        c = self.config
        full = {r.prompt.id: r for r in self.ctx.history.full()}
        raced = dict((p.id, score) for p, score in race.ranking())  # survivors (rendered, not dropped)
        ranked: list[tuple[float, int, Prompt]] = []
        for i, kid in enumerate(kids):
            if kid.id not in raced:
                continue  # dropped by the race, or failed to render
            score = raced[kid.id]
            parent = full.get(kid.parents[0]) if kid.parents else None
            base = score_on(parent, minibatch) if parent is not None else None
            if c.min_gain is not None and base is not None and score <= base + c.min_gain + 1e-9:
                continue
            ranked.append((-score, i, kid))
        return [kid for _, _, kid in sorted(ranked)[: c.n_promote]]

    def min_calls(self, task: Task) -> int:
        """The smallest first step's worst case: the seed's failure run (``failure_split="train"``), the
        proposer calls of one child, its race (every stage) and its confirmation on full dev (the race examples
        counted again: without a cache they are paid twice)."""
        n_dev = len(task.dev)
        plans = self._step_plans([task.seed_prompt()], set(), len(task.train), n_dev, lambda k: k * n_dev)
        return min((p.cost for p in plans), default=0)

    # -- the budget plan ----------------------------------------------------------------------------
    def step_knobs(self) -> dict[str, int]:
        """The config fields that set how many proposals a step asks for, each with the least the budget plan
        may shrink it to (together: one child per parent). Members with such fields override this."""
        return {}

    def step_shape(self, n_parents: int, config: SearchConfig) -> tuple[int, int]:
        """(children, proposer calls) of a step on ``n_parents`` beam parents with ``config``, worst case (every
        proposal accepted). Default: one child per parent at ``proposer_calls_per_child`` calls each."""
        return n_parents, n_parents * self.proposer_calls_per_child

    def _race_sizes(self, n_dev: int) -> list[int]:
        c = self.config
        return c.race_sizes(c.minibatch_size, n_dev) if c.minibatch_size else []

    def _step_plans(
        self,
        parents: Sequence[Prompt],
        failure_runs_done: set[str],
        n_train: int,
        n_dev: int,
        confirmation: Callable[[int], int],
    ) -> list[StepPlan]:
        """Every step shape from the full one (all ``parents``, the run's config) down to one parent with the
        :meth:`step_knobs` at their least, with its worst-case cost; ``confirmation(k)`` is the planned cost of
        confirming a raced child with ``k`` sub-prompts per example on full dev."""
        c = self.config
        k = max((subprompts(p) for p in parents), default=1)
        sizes = self._race_sizes(n_dev)
        pool = min(c.failure_pool, n_train) if isinstance(c, FailureSearchConfig) else 0
        runs = self.uses_failures and isinstance(c, FailureSearchConfig) and c.failure_split == "train"
        # a child's race (every stage) and the confirmations reserved for the best; no race: full dev for each
        per_child, confirm = (k * sizes[-1], confirmation(k)) if sizes else (k * n_dev, 0)
        knobs = self.step_knobs()
        current = dataclasses.asdict(c)
        ranges = [range(current[name], min(least, current[name]) - 1, -1) for name, least in knobs.items()]
        plans: list[StepPlan] = []
        for n in range(len(parents), 0, -1):
            failures = sum(eval_cost(p, pool) for p in parents[:n] if runs and p.id not in failure_runs_done)
            for values in itertools.product(*ranges):
                config = dataclasses.replace(c, **dict(zip(knobs, values, strict=True))) if knobs else c
                kids, calls = self.step_shape(n, config)
                if kids >= 1:
                    cost = failures + calls + kids * per_child + min(c.n_promote, kids) * confirm
                    plans.append(StepPlan(n, config, kids, calls, cost))
        return plans

    def _confirmation(self, k: int) -> int:
        """Planned calls to confirm a raced child with ``k`` sub-prompts per example on full dev."""
        sizes = self._race_sizes(len(self.ctx.task.dev))
        return self.ctx.confirmation_cost(sizes[-1] if sizes else 0, k)

    def _plan_step(self, beam: Sequence[TrialRecord]) -> StepPlan | str:
        """The largest step on ``beam`` (most children, then most parents, then the cheapest) whose worst case
        fits in the planned calls left; why the search ends when not even the smallest does."""
        task = self.ctx.task
        prompts = [r.prompt for r in beam]
        plans = self._step_plans(prompts, set(self.failure_runs), len(task.train), len(task.dev), self._confirmation)
        if not plans:
            return StepPlan(len(beam), self.config, 0, 0, 0)  # nothing to shrink: children() decides
        left = self.ctx.calls_left()
        if left is None:
            return plans[0]
        fitting = [p for p in plans if p.cost <= left]
        if not fitting:
            smallest = min(plans, key=lambda p: p.cost)
            reason = (
                f"budget planned out: {left} call{'s' * (left != 1)} left, the smallest step "
                f"({smallest.children} child{'ren' * (smallest.children != 1)} of 1 parent, worst case with "
                f"the confirmation on full dev) needs {smallest.cost}"
            )
            logger.info("step %d: %s", self.round, reason)
            return reason
        plan = max(fitting, key=lambda p: (p.children, p.parents, -p.cost))
        if plan is not plans[0]:
            logger.info(
                "step %d shrunk to the budget: %d of %d parents, %d of %d children (%d of %d planned calls)",
                self.round,
                plan.parents,
                plans[0].parents,
                plan.children,
                plans[0].children,
                plan.cost,
                plans[0].cost,
            )
        return plan
