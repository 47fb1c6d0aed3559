"""OptimizationResult: what a run hands back — best prompt, honest numbers, its trials, its spend. Saved as JSON.

``result.trials`` are the run's trial records as plain frozen rows (:class:`TrialSummary`; ``result.trials_frame()``
makes a pandas DataFrame of them when pandas is installed) and ``result.spend`` its spend, typed (:class:`Spend`,
read from ``result.usage``, which stays as saved for compatibility).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from promptopt.core.candidate import Prompt
from promptopt.core.exceptions import MissingDependencyError

if TYPE_CHECKING:
    from promptopt.run.history import TrialRecord

SEARCH_ROLES = ("task", "proposer", "train")
"""The roles whose calls the budget limits; ``report`` (the held-out test scores) is accounted apart."""


def _fmt(s: Mapping[str, Any] | None) -> str:
    if not s:
        return "n/a"
    return f"{s['mean']:.3f} [95% CI {s['ci_low']:.3f}–{s['ci_high']:.3f}] (n={s['n']})"


@dataclass(frozen=True, kw_only=True)
class TrialSummary:
    """One trial of a run as plain data: which prompt, on full dev or a minibatch, its score and the calls so far.

    ``mean``, ``ci_low`` and ``ci_high`` are None (and ``n`` 0) for a failed trial (``status="failed"``, ``error``).
    """

    trial: int
    step: int
    prompt_id: str
    instruction: str
    full: bool
    """True: scored on the whole dev split (only those compete for best prompt); False: a dev minibatch."""
    status: str
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    calls_so_far: int
    """Budgeted model calls spent when the trial finished (cache hits are free)."""
    origin: str = ""
    error: str | None = None

    @property
    def kind(self) -> str:
        return "full" if self.full else "minibatch"

    @classmethod
    def from_record(cls, record: TrialRecord) -> TrialSummary:
        r = record.result
        lo, hi = r.ci if r is not None else (None, None)
        return cls(
            trial=record.trial,
            step=record.step,
            prompt_id=record.prompt.id,
            instruction=record.prompt.instruction,
            full=record.full,
            status=record.status,
            mean=r.mean if r is not None else None,
            ci_low=lo,
            ci_high=hi,
            n=r.n if r is not None else 0,
            calls_so_far=record.calls_so_far,
            origin=record.prompt.origin,
            error=record.error,
        )

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrialSummary:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


TRIAL_COLUMNS = (*(f.name for f in fields(TrialSummary)), "kind")
"""The columns of :meth:`OptimizationResult.trials_frame`."""


@dataclass(frozen=True, kw_only=True)
class RoleSpend:
    """Model calls (cache hits excluded), tokens, cost, cache hits and failed calls of one role, or in total."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cache_hits: int = 0
    errors: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> RoleSpend:
        names = {f.name for f in fields(RoleSpend)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True, kw_only=True)
class Spend(RoleSpend):
    """What a run spent, in total and ``by_role`` (``task``, ``proposer``, ``train``, ``report``), with its wall
    time in ``seconds`` (a resumed run's included)."""

    seconds: float = 0.0
    by_role: Mapping[str, RoleSpend] = field(default_factory=dict)

    @classmethod
    def from_usage(cls, usage: Mapping[str, Any]) -> Spend:
        """From the usage dict of a run (``usage.json``, ``result.usage``)."""
        total = RoleSpend.from_dict(usage.get("total", {}))
        return cls(
            **{f.name: getattr(total, f.name) for f in fields(RoleSpend)},
            seconds=float(usage.get("elapsed_seconds", 0.0)),
            by_role={k: RoleSpend.from_dict(v) for k, v in usage.get("by_role", {}).items()},
        )

    def calls_of(self, *roles: str) -> int:
        return sum(self.by_role[r].calls for r in roles if r in self.by_role)

    @property
    def search_calls(self) -> int:
        """Calls of the search (task model, proposer, training examples): what the budget limits."""
        return self.calls_of(*SEARCH_ROLES)

    @property
    def test_calls(self) -> int:
        """Calls of the held-out test scores (role ``report``), never cut short by the budget."""
        return self.calls_of("report")

    def format(self) -> str:
        train = f", training examples {self.calls_of('train')}" if self.calls_of("train") else ""
        return (
            f"{self.search_calls} search calls (task model {self.calls_of('task')}, proposer "
            f"{self.calls_of('proposer')}{train}) + {self.test_calls} held-out test calls; {self.tokens} tokens, "
            f"${self.cost:.4f}, {self.cache_hits} cache hits, {self.seconds:.1f}s"
        )


@dataclass(frozen=True, kw_only=True)
class OptimizationResult:
    task: str
    optimizer: str
    optimizer_config: dict[str, Any]
    model: str
    proposer: str
    seed: int
    best_prompt: Prompt
    seed_prompt: Prompt
    baseline_dev: dict[str, Any]
    best_dev: dict[str, Any]
    baseline_test: dict[str, Any] | None = None
    best_test: dict[str, Any] | None = None
    test_comparison: dict[str, Any] | None = None
    """Paired comparison of best − seed on the test split (:func:`promptopt.core.stats.paired_comparison`)."""
    dev_comparison: dict[str, Any] | None = None
    """Paired comparison of the best dev candidate − seed on the dev split (None when no candidate beat the seed)."""
    selection: str = "best dev score"
    """How the best prompt was chosen (``select``), e.g. why the seed prompt was kept."""
    search: dict[str, int] = field(default_factory=dict)
    """Distinct candidates ``screened`` on dev minibatches and ``confirmed`` on the full dev split (seed excluded)."""
    notes: list[str] = field(default_factory=list)
    """What the optimizer decided and why (e.g. ``auto``'s stages)."""
    n_trials: int = 0
    stop_reason: str = ""
    rejected: dict[str, int] = field(default_factory=dict)
    racing: dict[str, int] = field(default_factory=dict)
    """Racing totals (races, raced, dropped, evaluations, saved) for optimizers that race candidates."""
    usage: dict[str, Any] = field(default_factory=dict)
    """The raw usage dict (as in usage.json); :attr:`spend` reads it typed."""
    run_dir: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    trials: tuple[TrialSummary, ...] = ()
    """Every trial of the run, in order (empty for a result.json written before trials were saved)."""

    @property
    def improved(self) -> bool:
        return self.best_prompt.id != self.seed_prompt.id

    @property
    def spend(self) -> Spend:
        """What the run spent: calls, tokens, cost, seconds, cache hits, in total and by role."""
        return Spend.from_usage(self.usage)

    def trials_frame(self) -> Any:
        """:attr:`trials` as a pandas DataFrame, one row per trial (columns :data:`TRIAL_COLUMNS`).

        pandas is not a dependency of promptopt: without it this raises :class:`MissingDependencyError`.
        """
        try:
            import pandas as pd
        except ImportError:
            raise MissingDependencyError(
                "result.trials_frame() needs pandas, which promptopt does not install: pip install pandas "
                "(result.trials holds the same rows as plain data)."
            ) from None
        return pd.DataFrame([t.to_dict() for t in self.trials], columns=list(TRIAL_COLUMNS))

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["best_prompt"] = self.best_prompt.to_dict()
        d["seed_prompt"] = self.seed_prompt.to_dict()
        d["trials"] = [t.to_dict() for t in self.trials]
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OptimizationResult:
        d = dict(d)
        d["best_prompt"] = Prompt.from_dict(d["best_prompt"])
        d["seed_prompt"] = Prompt.from_dict(d["seed_prompt"])
        d["trials"] = tuple(TrialSummary.from_dict(t) for t in d.get("trials") or ())
        return cls(**d)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> OptimizationResult:
        path = Path(path)
        if path.is_dir():
            path = path / "result.json"
        return cls.from_dict(json.loads(path.read_text()))

    def format(self) -> str:
        """A short human-readable report."""
        lines = [
            f"task {self.task} · optimizer {self.optimizer} · model {self.model} · seed {self.seed}",
            f"seed prompt   dev  {_fmt(self.baseline_dev)}",
            f"best prompt   dev  {_fmt(self.best_dev)}   ({self.best_prompt.id}, {self.best_prompt.origin})",
        ]
        if self.best_test is not None:
            lines.append(f"seed prompt   test {_fmt(self.baseline_test)}")
            lines.append(f"best prompt   test {_fmt(self.best_test)}")
        if self.test_comparison and self.improved:
            c = self.test_comparison
            ci = f"[95% CI {c['ci_low']:+.3f}–{c['ci_high']:+.3f}]"
            lines.append(f"best − seed on test: {c['diff']:+.3f} {ci}, p={c['p_value']:.3f}")
        lines.append(f"spent: {self.spend.format()}; {self.n_trials} trials; stopped: {self.stop_reason}")
        if self.search:
            lines.append(
                f"candidates: {self.search['screened']} screened on dev minibatches, "
                f"{self.search['confirmed']} confirmed on full dev"
            )
        lines += [f"{self.optimizer}: {note}" for note in self.notes]
        if self.selection.startswith("seed prompt kept"):
            lines.append(self.selection)
        if self.racing.get("races"):
            r = self.racing
            lines.append(
                f"racing: {r['dropped']} of {r['raced']} candidates dropped early in {r['races']} races, "
                f"{r['saved']} of {r['saved'] + r['evaluations']} evaluations saved"
            )
        if self.rejected:
            lines.append("rejected proposals: " + ", ".join(f"{k} {v}" for k, v in sorted(self.rejected.items())))
        lines.append(f"best instruction: {self.best_prompt.instruction}")
        if self.run_dir:
            lines.append(f"run directory: {self.run_dir}")
        return "\n".join(lines)
