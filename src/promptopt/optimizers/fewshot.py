"""``fewshot``: demonstrations from the train split, raced on dev — the strongest simple baseline.

Every candidate is the task's seed instruction and template with demos; no proposer is needed, so it works with
any backend. Demo sets:

- ``labeled`` — ``k`` train examples with their reference answers (DSPy's ``LabeledFewShot``), picked ``random``
  (``n_draws`` different draws), ``diverse`` (label-balanced farthest points in embedding space,
  :func:`promptopt.prompts.ics.diverse_sets`) or ``similar`` (per query, the nearest train examples: an In-Context
  Sampling prompt with K = 1);
- ``bootstrapped`` — DSPy's ``BootstrapFewShot``: a teacher (the best labeled candidate of the first race) answers
  up to ``bootstrap_pool`` train examples it does not show; those it gets right by the task's metric become demos
  with the teacher's own answer. (Not when dev is too small to race on: then every candidate that fits in the
  budget is scored on the full dev split directly.)

each for every ``k`` in ``shots`` and every demo format in ``demo_formats`` (inline, or chat turns:
:class:`~promptopt.core.candidate.Prompt`). Candidates are raced in priority order — per k in ``shots`` order, each
selection's first draw; the bootstrapped sets once the first race has found the teacher; then further random
draws — in chunks of ``chunk_size`` on one fixed dev sample (:mod:`promptopt.optimizers.racing`; the seed prompt and
earlier survivors take part for free), and the ``top_k`` best survivors are confirmed on the full dev split.

Budget plan (:mod:`promptopt.optimizers.planning`): the confirmations are reserved first; a chunk is raced only
when its worst case fits in what is left (shrunk to what fits), and the teacher runs only when it and one more
candidate fit. So the best candidates are always confirmed, and a budget that cannot pay for one candidate and
its confirmation is refused before anything is spent.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, get_args

from promptopt.core.candidate import SEARCHED_DEMO_FORMATS, DemoFormat, Prompt
from promptopt.core.data import Example
from promptopt.core.sampling import Strategy
from promptopt.optimizers.base import Optimizer, register_optimizer
from promptopt.optimizers.ics import TupleSettingsMixin
from promptopt.optimizers.planning import affordable, race_confirmations, race_worst_case
from promptopt.optimizers.racing import Race, RaceTotals, RacingConfig, incumbents_of, race_trials
from promptopt.prompts.ics import make_ics_prompt
from promptopt.run.context import RunContext

if TYPE_CHECKING:
    from promptopt.core.task import Task
    from promptopt.run.history import TrialRecord

Source = Literal["labeled", "bootstrapped"]
Selection = Literal["random", "similar", "diverse"]
SOURCES: tuple[Source, ...] = get_args(Source)
SELECTIONS: tuple[Selection, ...] = get_args(Selection)


@dataclass(frozen=True, kw_only=True)
class FewShotConfig(RacingConfig):
    shots: tuple[int, ...] = field(
        default=(4, 8, 2, 1), metadata={"min": 1, "help": "demos per prompt, in priority order"}
    )
    sources: tuple[Source, ...] = field(default=SOURCES, metadata={"help": "labeled, bootstrapped"})
    selections: tuple[Selection, ...] = field(default=SELECTIONS, metadata={"help": "random, similar, diverse"})
    demo_formats: tuple[DemoFormat, ...] = field(default=SEARCHED_DEMO_FORMATS, metadata={"help": "inline, turns, …"})
    n_draws: int = field(default=2, metadata={"min": 1, "help": "random draws of labeled demos per k"})
    bootstrap_pool: int = field(default=16, metadata={"min": 1, "help": "train examples the teacher answers"})
    embedder: str = field(default="auto", metadata={"help": "auto, minilm or tfidf (similar/diverse)"})
    minibatch_size: int = field(default=8, metadata={"min": 1, "help": "dev examples in the first race stage"})
    chunk_size: int = field(default=8, metadata={"min": 1, "help": "candidates per race"})
    top_k: int = field(default=2, metadata={"min": 1, "help": "survivors confirmed on the full dev split"})
    give_up: bool = field(
        default=False,
        metadata={
            "help": "stop racing when no demo set of the first race beats the seed prompt (sign test): the rest of "
            "the budget goes to what runs next (auto sets it when a soft prompt follows)"
        },
    )


@register_optimizer("fewshot")
class FewShotOptimizer(TupleSettingsMixin, Optimizer):
    """Labeled and bootstrapped demo sets (random / similar / diverse, k and demo format searched), raced on dev."""

    Config = FewShotConfig
    config: FewShotConfig

    def min_calls(self, task: Task) -> int:
        """One candidate's race and its confirmation on full dev (without a cache the race examples are paid
        twice, so this is the worst case)."""
        sizes = self.config.race_sizes(self.config.minibatch_size, len(task.dev))
        return (sizes[-1] if sizes else 0) + len(task.dev)

    def run(self, ctx: RunContext) -> str | None:
        self.ctx, c = ctx, self.config
        dev = list(ctx.task.dev)
        self.sizes = c.race_sizes(c.minibatch_size, len(dev))
        self.race_examples = tuple(ctx.rng.sample(dev, self.sizes[-1])) if self.sizes else ()
        self.queue: list[Prompt] = self._labeled(ctx.task)
        self.survivors: dict[str, tuple[Prompt, dict[str, float]]] = {}
        self.teacher: Prompt | None = None
        self.given_up = False
        self.racing = RaceTotals()
        self.formats = c.demo_formats
        self.notes = ()
        if not self.sizes:  # dev too small to race on: every affordable candidate goes straight to full dev
            if chosen := affordable(self.queue, ctx.calls_left(), lambda _: len(dev), lambda _: 0):
                ctx.evaluate_all(chosen)
            return None
        # race the queue chunk by chunk while the budget pays for a chunk and the confirmations
        while (race := self._next_race()) is not None:
            self._finish_race(race_trials(ctx, race))
            if self._wants_teacher():  # bootstrapping: the leader answers train examples it does not show
                self.teacher = self._leader()
                record = ctx.evaluate(self.teacher, self._teacher_pool())
                if record.result is not None:
                    self.queue = _unique([*self._bootstrapped(record), *self.queue])
        # confirm the best survivors on the full dev split
        ranked = sorted(self.survivors.values(), key=lambda v: -_mean(v[1]))
        if confirm := [p for p, _ in ranked[: c.top_k]]:
            ctx.evaluate_all(confirm)
        return None

    # -- candidates ------------------------------------------------------------------------------------------
    def _labeled(self, task: Task) -> list[Prompt]:
        """Labeled candidates in priority order: per k (in ``shots`` order), every selection's first draw; then
        the further random draws."""
        c, train = self.config, list(task.train)
        seed = task.seed_prompt()
        ks = list(dict.fromkeys(min(k, len(train)) for k in c.shots))
        order: list[tuple[int, Strategy, int]] = [(k, s, 0) for k in ks for s in c.selections]
        if "random" in c.selections:
            order += [(k, "random", d) for d in range(1, c.n_draws) for k in ks]
        out: list[Prompt] = []
        for k, selection, draw in order:
            base = self._select(seed, train, selection, k, draw)
            label = f"labeled {selection} k={k}" + (f" draw {draw}" if draw else "")
            out += [self._candidate(base, fmt, label) for fmt in c.demo_formats]
        return _unique(out)

    def _select(self, seed: Prompt, train: list[Example], selection: Strategy, k: int, draw: int) -> Prompt:
        ctx = self.ctx
        if selection == "random":
            return replace(seed, demos=tuple(random.Random(f"{ctx.seed}:{k}:{draw}").sample(train, k)))
        return make_ics_prompt(
            seed,
            train,
            k=1,
            shots=k,
            strategy=selection,
            seed=ctx.seed,
            embedder=self.config.embedder,
        )

    def _candidate(self, base: Prompt, demo_format: DemoFormat, demos: str) -> Prompt:
        return replace(
            base,
            demo_format=demo_format,
            parents=(),
            origin="fewshot",
            meta={"demos": demos, "demo_format": demo_format},
        )

    def _bootstrapped(self, record: TrialRecord) -> list[Prompt]:
        """Demos the teacher answered correctly, with its own answers, for every k and demo format."""
        assert record.result is not None and self.teacher is not None
        by_id = {ex.id: ex for ex in self.ctx.task.train}
        good = [
            Example(id=r.example_id, inputs=by_id[r.example_id].inputs, target=r.prediction)
            for r in record.result.records
            if r.score >= 1.0 and r.prediction is not None and r.example_id in by_id
        ]
        if not good:
            return []
        seed = self.ctx.task.seed_prompt()
        out = []
        for k in dict.fromkeys(min(k, len(good)) for k in self.config.shots):
            base = replace(seed, demos=tuple(good[:k]))
            for fmt in self.formats:
                out.append(self._candidate(base, fmt, f"bootstrapped k={k} (teacher {self.teacher.id})"))
        return _unique(out)

    # -- internals ---------------------------------------------------------------------------------------------
    @property
    def _per_candidate(self) -> int:
        return race_worst_case(self.sizes, len(self.ctx.task.dev))

    def _reserve(self, n_new: int) -> int:
        """Calls kept for confirming up to ``top_k`` survivors (now and ``n_new`` more) on full dev."""
        return race_confirmations(self.ctx, self.sizes, len(self.survivors) + n_new, self.config.top_k)

    def _next_race(self) -> Race | None:
        """The next chunk of the queue the budget pays for, as a race (None: nothing left or affordable)."""
        queue = [p for p in self.queue if p.id not in self.survivors and self.ctx.history.find(p.id) is None]
        chunk = affordable(
            queue[: self.config.chunk_size],
            self.ctx.calls_left(),
            lambda _: self._per_candidate,
            lambda p: self._reserve(len(p)),
        )
        budget_cut = len(chunk) < min(len(queue), self.config.chunk_size)
        self.queue = [] if budget_cut else queue[len(chunk) :]
        if not chunk:
            return None
        incumbents = incumbents_of([self.ctx.seed_record])
        incumbents.update({pid: scores for pid, (_, scores) in self.survivors.items()})
        return Race(chunk, self.race_examples, self.sizes, alpha=self.config.race_alpha, incumbents=incumbents)

    def _finish_race(self, race: Race) -> None:
        totals = self.racing
        assert totals is not None  # run() starts them
        totals.add(race)
        for p, _ in race.ranking():
            self.survivors[p.id] = (p, race.scores[p.id])
        if totals.races == 1:
            self._drop_losing_formats(race)
            if self.config.give_up:
                self._give_up_without_gain(race)

    def _drop_losing_formats(self, race: Race) -> None:
        """After the first race, stop trying a demo format whose best candidate (survivors first, then by race
        mean) lost to another format's best by the race's sign test on the examples both were scored on: the
        rest of the budget goes to what works for this task and model."""
        alive = {p.id for p in race.alive}

        def rank(p: Prompt) -> tuple[bool, float]:
            return p.id in alive, race.mean(p.id)

        best: dict[str, Prompt] = {}
        for p in race.candidates:
            if p.id not in race.failed and (p.demo_format not in best or rank(p) > rank(best[p.demo_format])):
                best[p.demo_format] = p
        if len(best) < 2:
            return
        leader = max(best.values(), key=rank)
        lost = sorted(f for f, p in best.items() if p is not leader and race.beaten(p.id, leader.id))
        if not lost:
            return
        self.formats = tuple(f for f in self.formats if f not in lost)
        self.queue = [p for p in self.queue if p.demo_format not in lost]
        self.notes = (
            *self.notes,
            f"fewshot: demo format {', '.join(lost)} dropped after the first race (its best candidate lost to "
            f"{leader.demo_format}: {race.mean(leader.id):.2f} vs "
            f"{max(race.mean(best[f].id) for f in lost):.2f} on the race examples)",
        )

    def _give_up_without_gain(self, race: Race) -> None:
        """``give_up``: after the first race, stop when its best survivor does not beat the seed prompt by the sign
        test on the race examples — on small dev splits a demo set that only ties the seed is likely a dev artefact,
        and the calls are better spent by the next stage. The survivors are still confirmed."""
        ranking = race.ranking()
        seed = self.ctx.seed_record.prompt
        if ranking and race.beaten(seed.id, ranking[0][0].id):
            return
        self.queue, self.given_up = [], True
        best = f"best {ranking[0][1]:.2f}" if ranking else "no survivor"
        self.notes = (
            *self.notes,
            f"fewshot: no demo set of the first race beat the seed prompt on the race examples ({best}); no further "
            "races, the rest of the budget goes to the next stage",
        )

    def _wants_teacher(self) -> bool:
        if self.given_up:
            return False
        if self.teacher is not None or "bootstrapped" not in self.config.sources or not self.survivors:
            return False
        pool = self._teacher_pool()
        left = self.ctx.calls_left()
        return bool(pool) and (left is None or len(pool) + self._per_candidate + self._reserve(1) <= left)

    def _leader(self) -> Prompt:
        """The survivor with the best race score so far (the teacher of the bootstrapped demos)."""
        return max(self.survivors.values(), key=lambda v: _mean(v[1]))[0]

    def _teacher_pool(self) -> tuple[Example, ...]:
        """Up to ``bootstrap_pool`` train examples the teacher does not show as demos (a seeded sample)."""
        shown = {d.id for d in self._leader().demos}
        pool = [ex for ex in self.ctx.task.train if ex.id not in shown]
        rng = random.Random(f"{self.ctx.seed}:teacher")
        return tuple(rng.sample(pool, min(self.config.bootstrap_pool, len(pool))))


def _mean(scores: dict[str, float]) -> float:
    return sum(scores.values()) / len(scores) if scores else 0.0


def _unique(prompts: Sequence[Prompt]) -> list[Prompt]:
    return list({p.id: p for p in prompts}.values())
