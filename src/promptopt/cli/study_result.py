"""The merged result of a ``structure_search`` study run by several workers (``promptopt worker --finalize``).

:func:`merge` reads every worker's finished trials (:func:`~promptopt.optimizers.structure_study.leaderboard`),
scores the ``n_confirm`` leaders and the seed prompt on full dev (free from a shared cache where a worker confirmed
them already), takes the best of those, scores it on test once and writes ``study-result.json``,
``leaderboard.md`` and the best prompt's export (``prompt/``) to the run directory.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptopt.core.exceptions import ConfigError
from promptopt.core.taskfile import load_task
from promptopt.evaluation.evaluator import EvalResult
from promptopt.models.budget import BudgetTracker
from promptopt.models.cache import open_cache

LEADERBOARD_ROWS = 20
"""Candidates listed in leaderboard.md (all of them are in study-result.json)."""


@dataclass(frozen=True)
class StudyResult:
    """What :func:`merge` found and wrote."""

    study: str
    trials: dict[str, int]
    """Trials by state (COMPLETE, FAIL, RUNNING, WAITING) and ``retries`` (trials queued again after a failure)."""
    leaderboard: list[dict[str, Any]]
    best: dict[str, Any]
    seed: dict[str, Any]
    spend: dict[str, int]
    run_dir: Path

    def format(self) -> str:
        t = self.trials
        b, s = self.best, self.seed
        return "\n".join(
            [
                f"study {self.study}: {t.get('COMPLETE', 0)} finished trials, {t.get('FAIL', 0)} failed, "
                f"{t.get('retries', 0)} retried; {len(self.leaderboard)} candidates from "
                f"{len({w for e in self.leaderboard for w in e['workers']})} workers",
                f"seed prompt: dev {s['dev']:.3f}",
                f"best prompt {b['prompt_id']}: dev {b['dev']:.3f} [{b['dev_ci'][0]:.3f}, {b['dev_ci'][1]:.3f}], "
                f"test {b['test']:.3f} [{b['test_ci'][0]:.3f}, {b['test_ci'][1]:.3f}] (n={b['test_n']})",
                f"spent on merging: {self.spend['calls']} model calls, {self.spend['cache_hits']} cache hits",
                f"written to {self.run_dir}",
            ]
        )


def study_config(study: Any, cache: str | None) -> tuple[dict[str, Any], str | bool]:
    """The creating run's settings stored in ``study``, and the cache to use (``cache`` given, else the run's)."""
    from promptopt.optimizers.structure_study import RUN_CONFIG

    cfg = study.user_attrs.get(RUN_CONFIG)
    if cfg is None:
        raise ConfigError(
            f"study {study.study_name!r} holds no promptopt run settings; create it with promptopt optimize "
            "--optimizer structure_search --storage URL --study NAME.",
            field="--study",
        )
    saved = cfg.get("cache")
    if cache is None and saved is not None and "***" in saved:
        raise ConfigError(
            f"the study's cache {saved} needs its password, which is not stored; repeat it with --cache.",
            field="--cache",
        )
    return cfg, cache if cache is not None else (saved or False)


def structure_optimizer(cfg: dict[str, Any], storage: str, study: str) -> Any:
    """The creating run's ``structure_search`` on this study (this process as a new worker)."""
    from promptopt.optimizers.presets import build_optimizer

    settings = {**cfg["optimizer_config"], "storage": storage, "study_name": study, "worker": None}
    return build_optimizer(cfg["optimizer"], settings, source=f"study {study}")


def _scored(result: EvalResult) -> dict[str, Any]:
    return {"mean": result.mean, "ci": list(result.ci), "n": result.n}


def merge(study: Any, cfg: dict[str, Any], model: Any, cache: Any, run_dir: Path) -> StudyResult:
    """Merge ``study`` (created with run settings ``cfg``) on ``model`` with ``cache``; write it to ``run_dir``."""
    from promptopt.api import evaluate
    from promptopt.optimizers.structure_study import leaderboard, make_space

    task = load_task(cfg["task"])
    config = structure_optimizer(cfg, "unused", study.study_name).config
    # build() reads the aggregation from a trial's parameters: "score" only lets make_space list every one
    space = make_space(config, task, cfg["seed"], list(study.user_attrs.get("instructions", [])), "score")
    board = leaderboard(study, space)
    cache_obj = open_cache(cache)
    tracker = BudgetTracker()

    def score(prompt: Any, split: str) -> EvalResult:
        return evaluate(
            task, model, prompt, split=split, cache=cache_obj or False, mode=cfg["mode"],
            batch_size=cfg["batch_size"], tracker=tracker,
        )  # fmt: skip

    seed_dev = score(None, "dev")
    confirmed = {e.prompt.id: score(e.prompt, "dev") for e in board[: config.n_confirm]}
    best_id = max(confirmed, key=lambda pid: confirmed[pid].mean, default=None)
    best_entry = next((e for e in board if e.prompt.id == best_id), None)
    if best_entry is None or confirmed[best_entry.prompt.id].mean <= seed_dev.mean:
        best_prompt, best_dev = task.seed_prompt(), seed_dev
    else:
        best_prompt, best_dev = best_entry.prompt, confirmed[best_entry.prompt.id]
    test = score(best_prompt, "test")
    counts: Counter[str] = Counter(t.state.name for t in study.get_trials(deepcopy=False))
    counts["retries"] = sum("failed_trial" in t.system_attrs or "retry_of" in t.user_attrs for t in study.trials)
    rows = [
        {
            "prompt_id": e.prompt.id,
            "instruction": e.prompt.instruction,
            "params": e.prompt.meta.get("params"),
            "trials": len(e.values),
            "mean_trial_value": e.mean,
            "workers": sorted(e.workers),
            "dev": _scored(confirmed[e.prompt.id]) if e.prompt.id in confirmed else None,
        }
        for e in board
    ]
    total = tracker.total
    result = StudyResult(
        study=study.study_name,
        trials=dict(counts),
        leaderboard=rows,
        best={
            "prompt_id": best_prompt.id,
            "instruction": best_prompt.instruction,
            "dev": best_dev.mean,
            "dev_ci": list(best_dev.ci),
            "test": test.mean,
            "test_ci": list(test.ci),
            "test_n": test.n,
        },
        seed={"prompt_id": seed_dev.prompt_id, "dev": seed_dev.mean, "dev_ci": list(seed_dev.ci)},
        spend={"calls": total.calls, "cache_hits": total.cache_hits},
        run_dir=run_dir,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in result.__dict__.items() if k != "run_dir"}
    (run_dir / "study-result.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", "utf-8")
    (run_dir / "leaderboard.md").write_text(markdown(result), encoding="utf-8")
    best_prompt.export(run_dir / "prompt")
    return result


def markdown(result: StudyResult) -> str:
    """The leaderboard as a Markdown table (the first :data:`LEADERBOARD_ROWS` candidates)."""
    lines = [
        f"# Study {result.study}",
        "",
        result.format().replace("\n", "  \n"),
        "",
        "| # | prompt | trials | mean trial value | full dev | workers | instruction |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(result.leaderboard[:LEADERBOARD_ROWS], 1):
        dev = f"{row['dev']['mean']:.3f}" if row["dev"] else ""
        text = " ".join(row["instruction"].split())[:80].replace("|", "\\|")
        lines.append(
            f"| {i} | {row['prompt_id']} | {row['trials']} | {row['mean_trial_value']:.3f} | {dev} | "
            f"{len(row['workers'])} | {text} |"
        )
    return "\n".join(lines) + "\n"
