"""Racing: score candidates on growing minibatches and drop those significantly worse than the leader.

A race runs in stages over one ordered list of examples: every live candidate is scored on the first
``sizes[0]`` examples, then on the next ones up to ``sizes[1]``, and so on. Before each further stage,
every candidate that is significantly worse than the leader on the examples scored so far is dropped
(a one-sided exact sign test on the examples where the two differ, at level ``alpha`` per look), so weak
candidates stop costing model calls early. Nobody is dropped after the last stage: the survivors' scores
on the whole race set are what the caller ranks them by (F-Race, Birattari et al. 2002, with a paired
sign test instead of Friedman's).

*Incumbents* — prompts already scored on these examples, e.g. an optimizer's parent prompts with full-dev
results — take part for free: they can lead the race, and a child significantly worse than its parent is
dropped without finishing.

One driver, :func:`drive`, runs a :class:`Race` stage by stage through any evaluation function: in a run,
:func:`race_trials` evaluates every stage through the run context (each stage one step of recorded trials);
:func:`race` races candidates through an evaluator directly, outside a run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from promptopt.core.exceptions import ConfigError
from promptopt.optimizers.config import OptimizerConfig
from promptopt.run.context import EvalRequest

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.core.data import Example
    from promptopt.evaluation.evaluator import EvalResult, Evaluator
    from promptopt.run.context import RunContext
    from promptopt.run.history import TrialRecord

logger = logging.getLogger(__name__)


def incumbents_of(records: Iterable[TrialRecord]) -> dict[str, Mapping[str, float]]:
    """Per-example scores of prompts already evaluated (e.g. parents on full dev), to race for free."""
    return {r.prompt.id: r.result.by_example for r in records if r.result is not None}


def sign_test(wins: int, losses: int) -> float:
    """One-sided exact sign test: P(at least ``wins`` of ``wins + losses`` fair coin flips)."""
    n = wins + losses
    if n == 0:
        return 1.0
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2**n


def stage_sizes(first: int, available: int, *, stages: int, growth: float) -> list[int]:
    """Race stage sizes ``first, first*growth, ...`` (at most ``stages``), each smaller than ``available``.

    Empty when even the first stage would use every example: then there is nothing to race on.
    """
    sizes: list[int] = []
    size = float(first)
    while len(sizes) < stages and round(size) < available:
        if not sizes or round(size) > sizes[-1]:
            sizes.append(round(size))
        size *= growth
    return sizes


@dataclass(frozen=True, kw_only=True)
class RacingConfig(OptimizerConfig):
    """Racing settings shared by the search optimizers (the first stage is their ``minibatch_size``)."""

    race_stages: int = field(
        default=3, metadata={"min": 1, "help": "race stages, each race_growth x the previous (1: one fixed minibatch)"}
    )
    race_growth: float = field(default=2.0, metadata={"help": "how much each race stage grows (> 1)"})
    race_alpha: float = field(
        default=0.05, metadata={"help": "sign-test level for dropping a candidate worse than the leader (0: never)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.race_growth <= 1:
            raise ConfigError(f"must be > 1, got {self.race_growth!r}", field="race_growth")
        if not 0 <= self.race_alpha < 1:
            raise ConfigError(f"must be in [0, 1), got {self.race_alpha!r}", field="race_alpha")

    def race_sizes(self, first: int, available: int) -> list[int]:
        return stage_sizes(first, available, stages=self.race_stages, growth=self.race_growth)


class Race:
    """One race of ``candidates`` over ``examples`` in stages of ``sizes`` (the last one: all examples)."""

    def __init__(
        self,
        candidates: Sequence[Prompt],
        examples: Sequence[Example],
        sizes: Sequence[int],
        *,
        alpha: float = 0.05,
        incumbents: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        if not sizes or list(sizes) != sorted(set(sizes)) or sizes[-1] > len(examples) or sizes[0] < 1:
            raise ValueError(f"race sizes must increase from >= 1 up to {len(examples)}, got {list(sizes)}")
        self.candidates = list(candidates)
        self.examples = tuple(examples[: sizes[-1]])
        self.sizes = list(sizes)
        self.alpha = alpha
        self.incumbents = {pid: dict(s) for pid, s in (incumbents or {}).items()}
        self.scores: dict[str, dict[str, float]] = {p.id: {} for p in self.candidates}
        self.alive = list(self.candidates)
        self.dropped: dict[str, int] = {}
        """Prompt id -> examples it was scored on when dropped."""
        self.failed: set[str] = set()
        self._stage = -1  # the stage whose requests are out

    # -- driving -------------------------------------------------------------------------------------------
    def requests(self) -> list[EvalRequest]:
        """The next stage's new examples for every live candidate (after dropping losers); [] when done."""
        if self._stage + 1 >= len(self.sizes):
            return []
        if self._stage >= 0:
            self._eliminate()
        if not self.alive:  # every candidate failed or lost to an incumbent
            self._stage = len(self.sizes) - 1
            return []
        self._stage += 1
        start = self.sizes[self._stage - 1] if self._stage else 0
        chunk = self.examples[start : self.sizes[self._stage]]
        return [EvalRequest(p, chunk) for p in self.alive]

    def record(self, prompt: Prompt, result: EvalResult | None) -> None:
        """A candidate's result on the stage's examples (None: it failed to render and leaves the race)."""
        if prompt.id not in self.scores:
            return
        if result is None:
            self.failed.add(prompt.id)
            self.alive = [p for p in self.alive if p.id != prompt.id]
            return
        self.scores[prompt.id].update(result.by_example)

    @property
    def done(self) -> bool:
        return self._stage + 1 >= len(self.sizes)

    # -- results ---------------------------------------------------------------------------------------------
    def mean(self, prompt_id: str) -> float:
        """Mean score on the race examples scored so far."""
        scores = self.scores[prompt_id]
        return sum(scores.values()) / len(scores) if scores else 0.0

    def ranking(self) -> list[tuple[Prompt, float]]:
        """Surviving candidates with their race mean, best first (ties: the earlier candidate)."""
        order = {p.id: i for i, p in enumerate(self.candidates)}
        ranked = sorted(self.alive, key=lambda p: (-self.mean(p.id), order[p.id]))
        return [(p, self.mean(p.id)) for p in ranked]

    def beaten(self, prompt_id: str, by_id: str) -> bool:
        """Whether ``by_id`` beats ``prompt_id`` by the race's sign test, on the race examples both were scored on
        (candidates or incumbents; never when ``alpha`` is 0)."""
        a, b = self._scores_of(prompt_id), self._scores_of(by_id)
        wins, losses = _wins_losses(b, a, [e for e in a if e in b])
        return self.alpha > 0 and sign_test(wins, losses) < self.alpha

    def _scores_of(self, prompt_id: str) -> Mapping[str, float]:
        if prompt_id in self.scores:
            return self.scores[prompt_id]
        race = {ex.id for ex in self.examples}
        return {e: v for e, v in self.incumbents[prompt_id].items() if e in race}

    @property
    def evaluations(self) -> int:
        """Example evaluations the race spent (each one model call unless cached)."""
        return sum(len(s) for s in self.scores.values())

    @property
    def saved(self) -> int:
        """Evaluations saved against scoring every candidate on every race example."""
        full = len(self.examples) * (len(self.candidates) - len(self.failed))
        return full - sum(len(s) for pid, s in self.scores.items() if pid not in self.failed)

    def summary(self) -> dict[str, Any]:
        return {
            "candidates": len(self.candidates),
            "stages": list(self.sizes),
            "dropped": len(self.dropped),
            "survivors": len(self.alive),
            "evaluations": self.evaluations,
            "saved": self.saved,
        }

    # -- internals ---------------------------------------------------------------------------------------------
    def _eliminate(self) -> None:
        seen = [ex.id for ex in self.examples[: self.sizes[self._stage]]]
        table = {p.id: self.scores[p.id] for p in self.alive}
        table.update({pid: s for pid, s in self.incumbents.items() if pid not in table and all(e in s for e in seen)})
        if self.alpha <= 0 or len(table) < 2:
            return

        def total(pid: str) -> float:
            return sum(table[pid].get(e, 0.0) for e in seen)

        leader = max(table, key=total)
        lead = table[leader]
        for p in list(self.alive):
            if p.id == leader:
                continue
            mine = table[p.id]
            wins, losses = _wins_losses(lead, mine, seen)
            if sign_test(wins, losses) < self.alpha:
                self.alive.remove(p)
                self.dropped[p.id] = len(mine)
                logger.debug("race: %s dropped after %d examples (%d-%d vs %s)", p.id, len(seen), wins, losses, leader)


def _wins_losses(lead: Mapping[str, float], mine: Mapping[str, float], examples: Sequence[str]) -> tuple[int, int]:
    """Examples where ``lead`` scores above / below ``mine`` (a missing score counts as 0)."""
    wins = sum(lead.get(e, 0.0) > mine.get(e, 0.0) for e in examples)
    losses = sum(lead.get(e, 0.0) < mine.get(e, 0.0) for e in examples)
    return wins, losses


@dataclass
class RaceTotals:
    """Totals over one run's races, reported in the run's result (``saved``: evaluations racing avoided)."""

    races: int = 0
    raced: int = 0
    dropped: int = 0
    evaluations: int = 0
    saved: int = 0

    def add(self, race: Race) -> dict[str, Any]:
        """Count a finished race; returns its summary."""
        summary = race.summary()
        self.races += 1
        self.raced += summary["candidates"]
        self.dropped += summary["dropped"]
        self.evaluations += summary["evaluations"]
        self.saved += summary["saved"]
        return summary

    def merge(self, other: RaceTotals) -> None:
        """Add another run part's totals (e.g. a stage of a composite optimizer)."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


def drive(race: Race, evaluate: Callable[[Sequence[EvalRequest]], Sequence[EvalResult | None]]) -> Race:
    """Run ``race`` to the end: each stage's requests go to ``evaluate`` (one result per request, None for a
    candidate that failed to render) and come back to the race."""
    while requests := race.requests():
        for q, result in zip(requests, evaluate(requests), strict=True):
            race.record(q.prompt, result)
    return race


def race_trials(ctx: RunContext, race: Race) -> Race:
    """Run ``race`` inside a run: every stage is one step of trials the runner records, charged and cached."""
    return drive(race, lambda requests: [record.result for record in ctx.evaluate_all(requests)])


@dataclass(frozen=True)
class RaceResult:
    """What :func:`race` returns: survivors ranked by their score on the whole race set."""

    ranking: list[tuple[Prompt, float]]
    results: dict[str, list[EvalResult]]
    """Prompt id -> its evaluation per stage it ran."""
    summary: dict[str, Any]


def race(
    evaluator: Evaluator,
    candidates: Sequence[Prompt],
    examples: Sequence[Example],
    *,
    first: int = 10,
    stages: int = 4,
    growth: float = 2.0,
    alpha: float = 0.05,
    incumbents: Mapping[str, Mapping[str, float]] | None = None,
) -> RaceResult:
    """Race ``candidates`` on ``examples`` through ``evaluator``; the last stage uses all of them."""
    sizes = [*stage_sizes(first, len(examples), stages=stages - 1, growth=growth), len(examples)]
    r = Race(candidates, examples, sizes, alpha=alpha, incumbents=incumbents)
    results: dict[str, list[EvalResult]] = {p.id: [] for p in candidates}

    def evaluate(requests: Sequence[EvalRequest]) -> list[EvalResult | None]:
        out = [evaluator.evaluate(q.prompt, q.examples, split="dev-race") for q in requests]
        for q, result in zip(requests, out, strict=True):
            results[q.prompt.id].append(result)
        return list(out)

    drive(r, evaluate)
    summary = r.summary()
    logger.info(
        "race: %d of %d candidates dropped early, %d of %d evaluations saved",
        summary["dropped"],
        summary["candidates"],
        summary["saved"],
        summary["saved"] + summary["evaluations"],
    )
    return RaceResult(ranking=r.ranking(), results=results, summary=summary)
