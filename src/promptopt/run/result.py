"""OptimizationResult: what a run hands back — best prompt, honest numbers, usage. Saved as JSON."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from promptopt.core.candidate import Prompt


def _fmt(s: Mapping[str, Any] | None) -> str:
    if not s:
        return "n/a"
    return f"{s['mean']:.3f} [95% CI {s['ci_low']:.3f}–{s['ci_high']:.3f}] (n={s['n']})"


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
    run_dir: str | None = None
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def improved(self) -> bool:
        return self.best_prompt.id != self.seed_prompt.id

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["best_prompt"] = self.best_prompt.to_dict()
        d["seed_prompt"] = self.seed_prompt.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OptimizationResult:
        d = dict(d)
        d["best_prompt"] = Prompt.from_dict(d["best_prompt"])
        d["seed_prompt"] = Prompt.from_dict(d["seed_prompt"])
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
        total = self.usage.get("total", {})
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
        roles = self.usage.get("by_role", {})
        calls = {r: roles.get(r, {}).get("calls", 0) for r in ("task", "proposer", "train", "report")}
        train = f", training examples {calls['train']}" if calls["train"] else ""
        lines.append(
            f"spent: {calls['task'] + calls['proposer'] + calls['train']} search calls (task model {calls['task']}, "
            f"proposer {calls['proposer']}{train}) + {calls['report']} held-out test calls; "
            f"{total.get('tokens', 0)} tokens, ${total.get('cost', 0.0):.4f}, {total.get('cache_hits', 0)} cache hits, "
            f"{self.usage.get('elapsed_seconds', 0.0):.1f}s; {self.n_trials} trials; stopped: {self.stop_reason}"
        )
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
