"""The search space of ``structure_search`` (:mod:`promptopt.optimizers.structure_search`): its settings, the plain
points a new study starts from, how a trial's parameters are suggested and which candidate they stand for."""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from promptopt.core.candidate import SEARCHED_DEMO_FORMATS, DemoFormat, Prompt
from promptopt.core.sampling import Aggregation, Strategy
from promptopt.optimizers.config import OptimizerConfig
from promptopt.prompts.formats import Format, Robust, apply_format
from promptopt.prompts.ics import make_ics_prompt
from promptopt.prompts.paraphrase import RobustOver

if TYPE_CHECKING:
    from promptopt.core.data import Example
    from promptopt.core.task import Task

PLAIN_MAX_SHOTS = 4
"""The plain few-shot points use the largest configured ``shots`` up to this many demos."""


@dataclass(frozen=True, kw_only=True)
class StructureSearchConfig(OptimizerConfig):
    n_trials: int = field(default=40, metadata={"min": 1, "help": "minibatch trials in the whole study"})
    minibatch_size: int = field(default=16, metadata={"min": 1, "help": "dev examples per trial"})
    full_eval_every: int = field(default=10, metadata={"min": 1, "help": "trials between full-dev checks"})
    n_confirm: int = field(default=2, metadata={"min": 1, "help": "unconfirmed leaders scored on full dev at the end"})
    n_instructions: int = field(default=4, metadata={"min": 0, "help": "instructions induced by the proposer"})
    instructions: tuple[str, ...] = field(default=(), metadata={"help": "extra instruction candidates"})
    max_words: int = field(default=50, metadata={"min": 1, "help": "longest induced instruction kept"})
    shots: tuple[int, ...] = field(default=(0, 2, 4), metadata={"min": 0, "help": "demos per prompt to try"})
    n_demo_seeds: int = field(default=4, metadata={"min": 1, "help": "random demo draws per setting"})
    demo_formats: tuple[DemoFormat, ...] = field(
        default=SEARCHED_DEMO_FORMATS, metadata={"help": "inline, turns, turns_first, turns_system"}
    )
    ks: tuple[int, ...] = field(default=(1,), metadata={"min": 1, "help": "ICS sub-prompts K (1 = one prompt)"})
    strategies: tuple[Strategy, ...] = field(default=("random",), metadata={"help": "random, similar, diverse"})
    aggregations: tuple[Aggregation, ...] = field(default=("vote",), metadata={"help": "vote, confidence"})
    embedder: str = field(default="auto", metadata={"help": "auto, minilm or tfidf"})
    n_formats: int = field(default=1, metadata={"min": 1, "help": "FormatSpread formats searched"})
    robust: Robust = field(default="none", metadata={"help": "none, or mean/worst over formats"})
    n_robust_formats: int = field(default=4, metadata={"min": 2, "help": "variants for the robust objective"})
    robust_over: RobustOver = field(default="formats", metadata={"help": "formats | paraphrases (of the instruction)"})
    n_startup_trials: int = field(default=8, metadata={"min": 1, "help": "random trials before TPE"})
    storage: str | None = field(default=None, metadata={"help": "Optuna storage URL (default: run dir sqlite)"})
    study_name: str | None = field(default=None, metadata={"help": "default promptopt-<task>-seed<seed>"})
    worker: str | None = field(default=None, metadata={"help": "this process's id (default: the run dir)"})
    heartbeat: int = field(default=10, metadata={"min": 0, "help": "seconds between trial heartbeats with storage"})
    max_retry: int = field(default=3, metadata={"min": 0, "help": "retries of a trial whose worker died"})
    temperature: float = field(default=0.9, metadata={"min": 0.0, "help": "proposer sampling temperature"})
    max_tokens: int = field(default=96, metadata={"min": 1, "help": "proposer reply length"})

    @property
    def plain_shots(self) -> int | None:
        """Demos of the plain few-shot points: the largest ``shots`` up to 4, else the smallest positive one."""
        positive = sorted(s for s in self.shots if s > 0)
        small = [s for s in positive if s <= PLAIN_MAX_SHOTS]
        return small[-1] if small else (positive[0] if positive else None)

    @property
    def plain_k(self) -> int:
        """ICS K of the plain few-shot points: 1 (one prompt) if configured, else the smallest K."""
        return 1 if 1 in self.ks else min(self.ks)

    @property
    def variants(self) -> int:
        """Evaluations per trial: the formats of the robust objective, or the candidate alone."""
        return self.n_robust_formats if self.robust != "none" else 1


@dataclass
class SearchSpace:
    """One study's parameters → candidates (the instruction texts are the study's, shared by its workers)."""

    config: StructureSearchConfig
    task: Task
    seed: int
    formats: list[Format]
    aggregations: list[Aggregation]
    instructions: list[str]

    @property
    def searches_format(self) -> bool:
        return (self.config.robust == "none" or self.config.robust_over == "paraphrases") and len(self.formats) > 1

    def plain_points(self) -> list[dict[str, Any]]:
        """The seed instruction as written: zero-shot, then with the plain shots in every demo format."""
        c = self.config
        fmt: dict[str, Any] = {"format": 0} if self.searches_format else {}
        points = [{"instruction": 0, "shots": 0, **fmt}] if 0 in c.shots else []
        if c.plain_shots is not None:
            demos: dict[str, Any] = {
                "instruction": 0,
                "shots": c.plain_shots,
                "demo_seed": 0,
                "strategy": "random" if "random" in c.strategies else c.strategies[0],
                "k": c.plain_k,
                **({"aggregation": self.aggregations[0]} if c.plain_k > 1 else {}),
                **fmt,
            }
            points += [{**demos, "demo_format": f} for f in c.demo_formats]
        return points[: c.n_trials]

    def suggest(self, trial: Any) -> dict[str, Any]:
        """A trial's parameters (conditional: demo settings only with demos, aggregation only for K > 1)."""
        c = self.config
        p: dict[str, Any] = {
            "instruction": trial.suggest_categorical("instruction", list(range(len(self.instructions))))
        }
        p["shots"] = trial.suggest_categorical("shots", list(c.shots))
        if p["shots"] > 0:
            p["demo_seed"] = trial.suggest_categorical("demo_seed", list(range(c.n_demo_seeds)))
            p["demo_format"] = trial.suggest_categorical("demo_format", list(c.demo_formats))
            p["strategy"] = trial.suggest_categorical("strategy", list(c.strategies))
            p["k"] = trial.suggest_categorical("k", list(c.ks))
            if p["k"] > 1:
                p["aggregation"] = trial.suggest_categorical("aggregation", self.aggregations)
        if self.searches_format:
            p["format"] = trial.suggest_categorical("format", list(range(len(self.formats))))
        return p

    def build(self, params: dict[str, Any]) -> Prompt:
        """The candidate a trial's parameters stand for."""
        task = self.task
        base = replace(
            task.seed_prompt(), instruction=self.instructions[params["instruction"]], origin="structure_search"
        )
        shots = min(params["shots"], len(task.train))
        prompt = base
        if shots > 0:
            prompt = make_ics_prompt(
                replace(base, demo_format=params["demo_format"]),
                task.train,
                k=params.get("k", 1),
                shots=shots,
                strategy=params.get("strategy", "random"),
                aggregation=params.get("aggregation", "vote"),
                seed=self.seed * 1000 + params.get("demo_seed", 0),
                embedder=self.config.embedder,
            )
        prompt = apply_format(prompt, self.formats[params.get("format", 0)])
        return replace(prompt, parents=(), origin="structure_search", meta={**prompt.meta, "params": params})

    def minibatch(self, number: int) -> tuple[Example, ...]:
        """The dev minibatch of trial ``number`` (the same for every worker and run)."""
        dev = list(self.task.dev)
        size = min(self.config.minibatch_size, len(dev))
        return tuple(random.Random(f"{self.seed}:{number}").sample(dev, size))
