"""``structure_search``: Optuna TPE over the structure of a prompt (the MIPRO idea on promptopt's loop).

Search space (one categorical parameter each, conditional where it only matters for demos):

- ``instruction`` — the seed instruction, the configured ``instructions`` and ``n_instructions`` induced
  by the proposer from train demos (APE's meta-prompt);
- ``shots`` (0 = zero-shot), ``demo_seed`` (which random draw of demos), and for In-Context Sampling
  ``k``, ``strategy`` and ``aggregation`` (:mod:`promptopt.ics`);
- ``format`` — one of ``n_formats`` FormatSpread formats (:mod:`promptopt.formats`; 0 = as written).

Each trial is one ``study.ask()`` → a candidate scored on a dev minibatch drawn for that trial number →
``study.tell()``; the runner does the evaluating, so budget, cache and history stay promptopt's. Every
``full_eval_every`` trials the leader (best mean minibatch score over its trials, not yet scored on full
dev) goes to the full dev split, and once more at the end. With ``robust`` = ``mean``/``worst`` a trial's
value is the mean/minimum over ``n_robust_formats`` formats instead (and ``format`` is not searched).

Persistence: the study lives in Optuna storage — ``storage`` (any Optuna RDB URL, e.g. PostgreSQL for
several machines), by default ``sqlite:///<run_dir>/optuna.sqlite``, in memory without a run directory.
The search space (instruction texts) is stored in the study, so workers and resumed runs share it.
``n_trials`` counts trials of the whole study. Several processes (each its own promptopt run, with the same
``storage`` and ``study_name``) work on one study. A resumed run (same run directory = same ``worker``)
fails its own trials left RUNNING by the crash and re-queues their parameters; finished trials are never
asked again, and leaders it had scored on full dev are re-scored from the response cache. A run stopped by
its budget leaves its last trial RUNNING until that run directory is resumed; there is no heartbeat, so a
worker that crashes and is never resumed leaves its trial RUNNING (and counted) for the others. The runner
picks the best prompt among this worker's full-dev evaluations.
"""

from __future__ import annotations

import logging
import os
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from promptopt._imports import require
from promptopt.candidate import Prompt
from promptopt.exceptions import ConfigError
from promptopt.formats import (
    ROBUST_OBJECTIVES,
    Robust,
    apply_format,
    format_variants,
    has_options,
    robust_score,
    sample_formats,
)
from promptopt.ics import AGGREGATIONS, STRATEGIES, make_ics_prompt
from promptopt.optimizers.base import EvalRequest, Optimizer, OptimizerConfig, RunContext, RunState, register_optimizer
from promptopt.optimizers.ics import TupleSettingsMixin, check_choices
from promptopt.optimizers.meta import Proposer, extract_instruction, format_example, render_meta_prompt

if TYPE_CHECKING:
    from promptopt.history import TrialRecord

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StructureSearchConfig(OptimizerConfig):
    n_trials: int = field(default=40, metadata={"min": 1, "help": "minibatch trials in the whole study"})
    minibatch_size: int = field(default=16, metadata={"min": 1, "help": "dev examples per trial"})
    full_eval_every: int = field(default=10, metadata={"min": 1, "help": "trials between full-dev checks"})
    n_instructions: int = field(default=4, metadata={"min": 0, "help": "instructions induced by the proposer"})
    instructions: tuple[str, ...] = field(default=(), metadata={"help": "extra instruction candidates"})
    shots: tuple[int, ...] = field(default=(0, 2, 4), metadata={"help": "demos per prompt to try"})
    n_demo_seeds: int = field(default=4, metadata={"min": 1, "help": "random demo draws per setting"})
    ks: tuple[int, ...] = field(default=(1,), metadata={"help": "ICS sub-prompts K (1 = one prompt)"})
    strategies: tuple[str, ...] = field(default=("random",), metadata={"help": "random, similar, diverse"})
    aggregations: tuple[str, ...] = field(default=("vote",), metadata={"help": "vote, confidence"})
    embedder: str = field(default="auto", metadata={"help": "auto, minilm or tfidf"})
    n_formats: int = field(default=1, metadata={"min": 1, "help": "FormatSpread formats searched"})
    robust: Robust = field(default="none", metadata={"help": "none, or mean/worst over formats"})
    n_robust_formats: int = field(default=4, metadata={"min": 2, "help": "formats for the robust objective"})
    n_startup_trials: int = field(default=8, metadata={"min": 1, "help": "random trials before TPE"})
    storage: str | None = field(default=None, metadata={"help": "Optuna storage URL (default: run dir sqlite)"})
    study_name: str | None = field(default=None, metadata={"help": "default promptopt-<task>-seed<seed>"})
    worker: str | None = field(default=None, metadata={"help": "this process's id (default: the run dir)"})
    temperature: float = field(default=0.9, metadata={"min": 0.0, "help": "proposer sampling temperature"})
    max_tokens: int = field(default=96, metadata={"min": 1, "help": "proposer reply length"})

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("instructions", "shots", "ks", "strategies", "aggregations"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.shots or min(self.shots) < 0 or not self.ks or min(self.ks) < 1:
            raise ConfigError(f"shots must be >= 0 and ks >= 1, got {self.shots} and {self.ks}.", field="shots")
        check_choices(self.strategies, STRATEGIES, "strategies")
        check_choices(self.aggregations, AGGREGATIONS, "aggregations")
        check_choices([self.robust], ROBUST_OBJECTIVES, "robust")


@register_optimizer("structure_search")
class StructureSearchOptimizer(TupleSettingsMixin, Optimizer):
    """Optuna TPE over instruction × demos × format (× ICS K/strategy), minibatch trials, resumable storage."""

    Config = StructureSearchConfig
    config: StructureSearchConfig
    uses_proposer = True

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        optuna = require("optuna", extra="optuna", feature="the structure_search optimizer")
        self.optuna = optuna
        c = self.config
        self.worker = c.worker or (str(ctx.run_dir.resolve()) if ctx.run_dir else f"pid{os.getpid()}-{uuid.uuid4()}")
        url = c.storage or (f"sqlite:///{ctx.run_dir.resolve() / 'optuna.sqlite'}" if ctx.run_dir else None)
        # several workers on one SQLite file wait for each other's writes instead of failing at once
        engine = {"connect_args": {"timeout": 60}} if url and url.startswith("sqlite") else None
        self.storage = (
            optuna.storages.RDBStorage(url, engine_kwargs=engine) if url else optuna.storages.InMemoryStorage()
        )
        sampler = optuna.samplers.TPESampler(seed=ctx.seed, n_startup_trials=c.n_startup_trials)
        self.study = optuna.create_study(
            study_name=c.study_name or f"promptopt-{ctx.task.name}-seed{ctx.seed}",
            storage=self.storage,
            sampler=sampler,
            direction="maximize",
            load_if_exists=True,
        )
        self.instructions = self._instructions()
        self.formats = sample_formats(c.n_formats, seed=ctx.seed, enumeration=has_options(ctx.task))
        self.aggregations = [a for a in c.aggregations if a == "vote" or ctx.evaluator.resolved_mode == "score"]
        if not self.aggregations:
            raise ConfigError("aggregation 'confidence' needs label scoring; add 'vote'.", field="aggregations")
        self.values: dict[str, list[float]] = {}  # candidate id -> its trial values
        self.prompts: dict[str, Prompt] = {}
        self.full_done: set[str] = set()
        self.open: dict[int, Any] = {}  # outstanding trial by number
        self.pending: list[Prompt] = []  # full-dev evaluations to propose next
        self.told = 0
        self._recover()

    # -- the search space -------------------------------------------------------------------------
    def _instructions(self) -> list[str]:
        """Instruction candidates, shared through the study (the first process to get here writes them)."""
        stored = self.study.user_attrs.get("instructions")
        if stored is not None:
            return list(stored)
        task, c = self.ctx.task, self.config
        out = list(dict.fromkeys([task.instruction, *c.instructions]))
        if c.n_instructions:
            proposer = Proposer(self.ctx.proposer, temperature=c.temperature, max_tokens=c.max_tokens)
            train = list(task.train)
            metas = [
                render_meta_prompt(
                    "ape_induce", demos=[format_example(d) for d in self.ctx.rng.sample(train, min(5, len(train)))]
                )
                for _ in range(c.n_instructions)
            ]
            forbidden = [str(v) for ex in train for v in ex.inputs.values()]
            for text in proposer.ask(metas):
                ext = extract_instruction(text, forbidden=forbidden)
                if ext.instruction is not None and ext.instruction not in out:
                    out.append(ext.instruction)
        self.study.set_user_attr("instructions", out)
        return list(self.study.user_attrs["instructions"])

    def _suggest(self, trial: Any) -> dict[str, Any]:
        c = self.config
        p: dict[str, Any] = {
            "instruction": trial.suggest_categorical("instruction", list(range(len(self.instructions))))
        }
        p["shots"] = trial.suggest_categorical("shots", list(c.shots))
        if p["shots"] > 0:
            p["demo_seed"] = trial.suggest_categorical("demo_seed", list(range(c.n_demo_seeds)))
            p["strategy"] = trial.suggest_categorical("strategy", list(c.strategies))
            p["k"] = trial.suggest_categorical("k", list(c.ks))
            if p["k"] > 1:
                p["aggregation"] = trial.suggest_categorical("aggregation", self.aggregations)
        if c.robust == "none" and len(self.formats) > 1:
            p["format"] = trial.suggest_categorical("format", list(range(len(self.formats))))
        return p

    def build(self, params: dict[str, Any]) -> Prompt:
        """The candidate a trial's parameters stand for."""
        task = self.ctx.task
        base = replace(
            task.seed_prompt(), instruction=self.instructions[params["instruction"]], origin="structure_search"
        )
        shots = min(params["shots"], len(task.train))
        prompt = base
        if shots > 0:
            prompt = make_ics_prompt(
                base,
                task.train,
                k=params.get("k", 1),
                shots=shots,
                strategy=params.get("strategy", "random"),
                aggregation=params.get("aggregation", "vote"),
                seed=self.ctx.seed * 1000 + params.get("demo_seed", 0),
                embedder=self.config.embedder,
            )
        prompt = apply_format(prompt, self.formats[params.get("format", 0)])
        return replace(prompt, parents=(), origin="structure_search", meta={**prompt.meta, "params": params})

    def _minibatch(self, number: int) -> tuple:
        dev = list(self.ctx.task.dev)
        size = min(self.config.minibatch_size, len(dev))
        return tuple(random.Random(f"{self.ctx.seed}:{number}").sample(dev, size))

    # -- resume -----------------------------------------------------------------------------------
    def _recover(self) -> None:
        """Continue the study: learn from finished trials, retry this worker's interrupted ones."""
        states = self.optuna.trial.TrialState
        for t in self.study.get_trials(deepcopy=False):
            if t.state == states.COMPLETE:
                pid = self._remember(t.params)
                self.values.setdefault(pid, []).append(float(t.value))
            elif t.state == states.RUNNING and t.user_attrs.get("worker") == self.worker:
                self.storage.set_trial_state_values(t._trial_id, state=states.FAIL)
                self.study.enqueue_trial(t.params, user_attrs={"retry_of": t.number}, skip_if_exists=False)
                logger.info("structure_search: trial %d was interrupted; its parameters are queued again", t.number)
        for params in self.study.user_attrs.get(f"full:{self.worker}", []):
            self.pending.append(self.prompts[self._remember(params)])

    def _remember(self, params: dict[str, Any]) -> str:
        prompt = self.build(dict(params))
        self.prompts.setdefault(prompt.id, prompt)
        return prompt.id

    def _n_taken(self) -> int:
        states = self.optuna.trial.TrialState
        return len(self.study.get_trials(deepcopy=False, states=(states.COMPLETE, states.RUNNING, states.WAITING)))

    def leader(self, *, skip_done: bool) -> Prompt | None:
        """The candidate with the best mean trial value (ties: more trials) — among those not yet scored on
        full dev (``skip_done``), or overall, returning None when it has been scored already."""
        todo = [pid for pid in self.values if not (skip_done and pid in self.full_done)]
        if not todo:
            return None
        best = max(todo, key=lambda pid: (sum(self.values[pid]) / len(self.values[pid]), len(self.values[pid])))
        return None if best in self.full_done else self.prompts[best]

    # -- the protocol -----------------------------------------------------------------------------
    def propose(self, state: RunState) -> Sequence[Prompt | EvalRequest]:
        if self.pending:
            return [self.pending.pop(0)]
        waiting = self.study.get_trials(deepcopy=False, states=(self.optuna.trial.TrialState.WAITING,))
        if not waiting and self._n_taken() >= self.config.n_trials:
            lead = self.leader(skip_done=False)
            return [lead] if lead is not None else []
        trial = self.study.ask()
        trial.set_user_attr("worker", self.worker)
        params = self._suggest(trial)
        prompt = self.build(params)
        self.prompts.setdefault(prompt.id, prompt)
        self.open = {trial.number: (trial, prompt.id)}
        variants = (
            format_variants(prompt, self.ctx.task, self.config.n_robust_formats, seed=self.ctx.seed)
            if self.config.robust != "none"
            else [prompt]
        )
        batch = self._minibatch(trial.number)
        return [EvalRequest(v, batch) for v in variants]

    def observe(self, state: RunState, records: Sequence[TrialRecord]) -> None:
        if len(records) == 1 and records[0].full:
            self._observe_full(records[0])
            return
        ((trial, pid),) = self.open.values()
        self.open = {}
        if any(r.status != "complete" for r in records):
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
            return
        means = [r.mean for r in records]
        value = robust_score(means, self.config.robust)
        self.study.tell(trial, value)
        self.values.setdefault(pid, []).append(value)
        self.told += 1
        if self.told % self.config.full_eval_every == 0 and (lead := self.leader(skip_done=True)) is not None:
            self.pending.append(lead)

    def _observe_full(self, record: TrialRecord) -> None:
        pid = record.prompt.id
        self.full_done.add(pid)
        params = self.prompts[pid].meta.get("params") if pid in self.prompts else None
        if params is not None:
            key = f"full:{self.worker}"
            done = list(self.study.user_attrs.get(key, []))
            if dict(params) not in done:
                self.study.set_user_attr(key, [*done, dict(params)])
