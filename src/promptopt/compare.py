"""Compare optimizers on one task at one budget: :func:`compare_optimizers`, the API behind ``promptopt compare``.

Every optimizer × seed runs through :func:`promptopt.api.optimize` with the same task (same splits), models and
budget, each with its own fresh response cache, so every run pays for its calls from a cold start. The out directory:

``out/compare.json`` — what was compared and how (``format: "promptopt.compare/1"``)::

    {"format": "promptopt.compare/1",
     "settings": {"task", "optimizers": [...], "model", "proposer", "budget": {max_calls, ...}, "seeds": [...],
                  "batch_size", "mode", "select"},
     "provenance": {"promptopt": version, "python": version, "commit": git sha or null, "command": str,
                    "versions": {distribution: version}, "started": ISO time, "updated": ISO time},
     "runs": [{"optimizer", "seed", "run_dir": "runs/<optimizer>-seed<k>", "cache": "cache/<optimizer>-seed<k>.sqlite",
               "status": "pending" | "finished"}],
     "leaderboard": "leaderboard.json" (null until every run finished)}

Paths in it are relative to ``out``. A run directory is an ordinary one (config.json, result.json,
test_results.json, ...; see :mod:`promptopt.run.rundir`): ``promptopt.OptimizationResult.load(out / run_dir)``
reads it.

``out/leaderboard.json`` (``format: "promptopt.leaderboard/1"``): ``task``, ``metric``, ``n_test``, ``seeds``,
``leader``, ``provenance`` (as in compare.json) and ``rows``, best first. A row is one optimizer: ``rank``,
``optimizer``, ``n_seeds``, ``test_mean`` (mean over seeds of the best prompt's test mean), ``test_sd``/``test_min``/
``test_max`` (spread over seeds, sd 0 for one seed), ``test_ci_low``/``test_ci_high``/``ci_method`` (95% CI over the
test examples of the per-example score averaged over seeds: for one seed exactly the run's result), ``vs_seed`` and
``vs_leader`` (paired comparisons on the same test examples, as :meth:`promptopt.core.stats.PairedComparison.to_dict`:
``diff``, ``ci_low``, ``ci_high``, ``p_value``, ``method`` — Newcombe + exact McNemar for 0/1 scores, else the
bootstrap; ``vs_leader`` is null for the leader), ``calls``, ``search_calls``, ``tokens``, ``cost``, ``seconds`` (means
over seeds) and ``runs`` (per seed: ``seed``, ``run_dir``, ``test_mean``, ``test_ci_low``, ``test_ci_high``,
``vs_seed``, ``improved``, ``best_prompt_id``, ``calls``, ``tokens``, ``cost``, ``seconds``).

``out/leaderboard.csv``: the rows flattened (:data:`CSV_COLUMNS`).

Re-running with the same ``out`` skips finished runs (result.json present, settings equal) and resumes interrupted
ones; other settings in an existing out directory are a :class:`ConfigError`.
"""

from __future__ import annotations

import csv
import json
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from promptopt.api import MaxErrors, check_mode, check_select, optimize
from promptopt.core._files import write_text_atomic
from promptopt.core.exceptions import ConfigError, PromptOptError
from promptopt.core.stats import interval_method, mean, mean_ci, paired_comparison
from promptopt.core.task import Task
from promptopt.core.taskfile import load_task
from promptopt.evaluation.evaluator import EvalResult, Mode
from promptopt.models import Model
from promptopt.models.budget import DEFAULT_MAX_ERRORS, Budget
from promptopt.optimizers.base import Optimizer
from promptopt.optimizers.planning import refuse_small_budget
from promptopt.optimizers.presets import load_optimizer
from promptopt.run.callbacks import Callback
from promptopt.run.loop import Selection
from promptopt.run.result import OptimizationResult
from promptopt.run.rundir import CONFIG_FILE, read_run_config, versions

COMPARE_FILE, LEADERBOARD_JSON, LEADERBOARD_CSV = "compare.json", "leaderboard.json", "leaderboard.csv"
COMPARE_FORMAT, LEADERBOARD_FORMAT = "promptopt.compare/1", "promptopt.leaderboard/1"
CSV_COLUMNS = (
    "rank", "optimizer", "n_seeds", "test_mean", "test_sd", "test_ci_low", "test_ci_high",
    "vs_seed_diff", "vs_seed_ci_low", "vs_seed_ci_high", "vs_seed_p",
    "vs_leader_diff", "vs_leader_ci_low", "vs_leader_ci_high", "vs_leader_p",
    "calls", "search_calls", "tokens", "cost", "seconds",
)  # fmt: skip
RUN_KEYS = ("optimizer", "optimizer_config", "model", "proposer", "budget", "seed")
"""The settings of a run's config.json that must equal the compare's for a finished run to count."""


@dataclass(frozen=True)
class RunSpec:
    """One optimizer × seed of a compare, and where it lives under ``out``."""

    optimizer: str
    seed: int
    optimizer_obj: Optimizer

    @property
    def name(self) -> str:
        return f"{Path(self.optimizer).stem}-seed{self.seed}"

    @property
    def run_dir(self) -> str:
        return f"runs/{self.name}"

    @property
    def cache(self) -> str:
        return f"cache/{self.name}.sqlite"


RunProgress = Callable[[RunSpec, str, int, int], None]
"""Called before each run with its spec, what happens (``skip``, ``resume``, ``start``), its number and the total."""


def check_names(optimizers: Sequence[str]) -> list[str]:
    """The optimizer names, checked: not empty, no duplicates (also after removing a preset's ``.yaml``)."""
    names = [o.strip() for o in optimizers]
    if not names or any(not n for n in names):
        raise ConfigError(
            "give at least one optimizer name, e.g. baseline,ape,opro (no empty names).", field="optimizers"
        )
    stems = [Path(n).stem for n in names]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise ConfigError(f"duplicate optimizer {', '.join(dupes)}; name each one once.", field="optimizers")
    return names


def check_seeds(seeds: Sequence[int]) -> list[int]:
    out = [int(s) for s in seeds]
    if not out:
        raise ConfigError("give at least one seed, e.g. 0 or 1,2,3.", field="seeds")
    if len(set(out)) != len(out):
        raise ConfigError(f"duplicate seeds in {out}; give each seed once.", field="seeds")
    return out


def _load(name: str, task: Task, budget: Budget) -> Optimizer:
    try:
        opt = load_optimizer(name)
    except ConfigError as exc:
        raise ConfigError(exc.message, source=exc.source, field="optimizers") from None
    if budget.max_calls is not None and opt.min_calls(task):
        refuse_small_budget(
            opt.name, opt.min_calls(task), len(task.dev), budget.max_calls, "one screening and one confirmation"
        )
    return opt


def _commit() -> str | None:
    """The git commit of the promptopt source, if it is a git checkout."""
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def _read_compare(out: Path, settings: dict[str, Any], resume: bool) -> dict[str, Any] | None:
    """The compare saved in ``out`` (None: a new one); refuse other settings or a directory that is not a compare."""
    file = out / COMPARE_FILE
    if out.is_file():
        raise ConfigError("a file is in the out directory's place; pick another directory.", field="out")
    if not file.is_file():
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"{out} is not empty and holds no {COMPARE_FILE}; pick a new directory.", field="out")
        return None
    if not resume:
        raise ConfigError(f"{out} holds a compare already; resume it or pick a new directory.", field="out")
    try:
        saved: dict[str, Any] = json.loads(file.read_text(encoding="utf-8"))
        old = saved["settings"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read it ({exc}); restore it or pick a new directory.", source=str(file)) from None
    changed = sorted(k for k in settings.keys() | old.keys() if settings.get(k) != old.get(k))
    if changed:
        raise ConfigError(
            f"this out directory holds a compare with other settings ({', '.join(changed)}); re-run it with the same "
            "settings to continue it, or pick a new --out.",
            source=str(file),
        )
    return saved


def _state(out: Path, spec: RunSpec, expected: dict[str, Any]) -> str:
    """``skip`` (finished, same settings), ``resume`` (interrupted) or ``start`` (nothing saved yet)."""
    run_dir = out / spec.run_dir
    if not (run_dir / CONFIG_FILE).is_file():
        return "start"
    saved = read_run_config(run_dir)
    changed = sorted(k for k in RUN_KEYS if saved.get(k) != expected[k])
    if changed:
        raise ConfigError(
            f"the run here has other settings than this compare ({', '.join(changed)}); delete it to run it again.",
            source=str(run_dir),
        )
    return "skip" if (run_dir / "result.json").is_file() else "resume"


def compare_optimizers(
    task: Task | str | Path,
    optimizers: Sequence[str],
    *,
    model: Model | str,
    proposer: Model | str | None = None,
    budget: Budget,
    seeds: Sequence[int] = (0,),
    out: str | Path,
    resume: bool = True,
    batch_size: int = 32,
    mode: Mode = "auto",
    select: Selection = "best",
    max_errors: MaxErrors = DEFAULT_MAX_ERRORS,
    callbacks: Sequence[Callback] = (),
    on_run: RunProgress | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run every optimizer in ``optimizers`` (names or preset paths) once per seed in ``seeds`` on ``task`` at the
    same ``budget``, and return the leaderboard (also saved in ``out``, with compare.json; see the module docstring).

    Each run gets its own run directory ``out/runs/<optimizer>-seed<k>`` and a fresh response cache under
    ``out/cache``. With ``resume=True`` (the default) an existing compare in ``out`` with the same settings continues:
    finished runs are read back, not run again, and interrupted ones resume. ``command`` is recorded as provenance
    (default: this process's command line).
    """
    names = check_names(optimizers)
    seed_list = check_seeds(seeds)
    check_select(select)
    task_spec = str(task) if isinstance(task, str | Path) else task.source
    task_obj = load_task(task) if isinstance(task, str | Path) else task
    check_mode(mode, task_obj)
    model_spec = model if isinstance(model, str) else model.name
    proposer_spec = proposer if isinstance(proposer, str) else (proposer.name if proposer is not None else model_spec)
    opts = {name: _load(name, task_obj, budget) for name in names}
    specs = [RunSpec(name, s, opts[name]) for name in names for s in seed_list]
    settings = {
        "task": task_spec,
        "optimizers": names,
        "model": model_spec,
        "proposer": proposer_spec,
        "budget": asdict(budget),
        "seeds": seed_list,
        "batch_size": batch_size,
        "mode": mode,
        "select": select,
    }
    root = Path(out)
    saved = _read_compare(root, settings, resume)
    try:
        (root / "runs").mkdir(parents=True, exist_ok=True)
        (root / "cache").mkdir(exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot write the out directory ({exc}); give a writable one.", field="out") from None
    v = versions()
    provenance = {
        "promptopt": v.get("promptopt-toolkit", "unknown"),
        "python": v["python"],
        "commit": _commit(),
        "command": command if command is not None else shlex.join(sys.argv),
        "started": saved["provenance"].get("started", _now()) if saved else _now(),
    }
    status = {spec.name: "pending" for spec in specs}

    def stamped() -> dict[str, Any]:
        """The provenance as of now (the versions of what the runs have loaded so far: torch once a run used it)."""
        return {**provenance, "versions": versions(), "updated": _now()}

    def save(leaderboard: str | None) -> None:
        keys = ("optimizer", "seed", "run_dir", "cache")
        runs = [{**{k: getattr(s, k) for k in keys}, "status": status[s.name]} for s in specs]
        payload = {
            "format": COMPARE_FORMAT,
            "settings": settings,
            "provenance": stamped(),
            "runs": runs,
            "leaderboard": leaderboard,
        }
        _write_json(root / COMPARE_FILE, payload)

    states = {}
    for spec in specs:
        expected = {
            "optimizer": spec.optimizer_obj.name,
            "optimizer_config": spec.optimizer_obj.to_config(),
            "model": model_spec,
            "proposer": proposer_spec,
            "budget": asdict(budget),
            "seed": spec.seed,
        }
        states[spec.name] = _state(root, spec, expected)
        if states[spec.name] == "skip":
            status[spec.name] = "finished"
    save(None)
    results: dict[str, OptimizationResult] = {}
    for i, spec in enumerate(specs, 1):
        state = states[spec.name]
        if on_run is not None:
            on_run(spec, state, i, len(specs))
        if state == "skip":
            results[spec.name] = OptimizationResult.load(root / spec.run_dir)
            continue
        results[spec.name] = optimize(
            task_obj if task_spec == "<python>" else task_spec,
            load_optimizer(spec.optimizer),
            model,
            proposer=proposer,
            budget=budget,
            seed=spec.seed,
            run_dir=root / spec.run_dir,
            cache=root / spec.cache,
            callbacks=callbacks,
            evaluate_test=True,
            batch_size=batch_size,
            mode=mode,
            select=select,
            resume=state == "resume",
            max_errors=max_errors,
        )
        status[spec.name] = "finished"
        save(None)
    board = leaderboard(root, task_obj.name, names, seed_list, {s.name: s for s in specs}, results)
    board["provenance"] = stamped()
    _write_json(root / LEADERBOARD_JSON, board)
    write_csv(root / LEADERBOARD_CSV, board["rows"])
    save(LEADERBOARD_JSON)
    return board


def _test_records(run_dir: Path) -> tuple[EvalResult, EvalResult]:
    """The seed and best prompts' per-example test records of a finished run."""
    file = run_dir / "test_results.json"
    try:
        d = json.loads(file.read_text(encoding="utf-8"))
        return EvalResult.from_dict(d["seed"]), EvalResult.from_dict(d["best"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PromptOptError(f"{file}: cannot read the run's test records ({exc}).") from None


def _averaged(evals: Sequence[EvalResult]) -> dict[str, float]:
    """Score per test example, averaged over runs (the examples every run scored)."""
    common = set.intersection(*(set(e.by_example) for e in evals))
    order = [r.example_id for r in evals[0].records if r.example_id in common]
    return {k: mean([e.by_example[k] for e in evals]) for k in order}


def _paired(a: dict[str, float], b: dict[str, float]) -> dict[str, Any] | None:
    keys = [k for k in a if k in b]
    return paired_comparison([a[k] for k in keys], [b[k] for k in keys]).to_dict() if keys else None


def _usage(result: OptimizationResult) -> dict[str, float]:
    total = result.usage.get("total", {})
    report = result.usage.get("by_role", {}).get("report", {}).get("calls", 0)
    return {
        "calls": total.get("calls", 0),
        "search_calls": total.get("calls", 0) - report,
        "tokens": total.get("tokens", 0),
        "cost": total.get("cost", 0.0),
        "seconds": result.usage.get("elapsed_seconds", 0.0),
    }


def leaderboard(
    root: Path,
    task: str,
    names: Sequence[str],
    seeds: Sequence[int],
    specs: dict[str, RunSpec],
    results: dict[str, OptimizationResult],
) -> dict[str, Any]:
    """The leaderboard of finished runs (see the module docstring), best test mean first."""
    rows: list[dict[str, Any]] = []
    best_scores: dict[str, dict[str, float]] = {}
    metric, n_test = "score", 0
    for name in names:
        keys = [f"{Path(name).stem}-seed{s}" for s in seeds]
        evals = [_test_records(root / specs[k].run_dir) for k in keys]
        seed_scores, best = _averaged([e[0] for e in evals]), _averaged([e[1] for e in evals])
        best_scores[name] = best
        metric, n_test = evals[0][1].metric, len(best)
        means = [float(bt["mean"]) for k in keys if (bt := results[k].best_test) is not None]
        lo, hi = mean_ci(list(best.values()))
        usages = [_usage(results[k]) for k in keys]
        runs = []
        for k in keys:
            r, bt = results[k], results[k].best_test or {}
            runs.append(
                {
                    "seed": r.seed,
                    "run_dir": specs[k].run_dir,
                    "test_mean": bt.get("mean"),
                    "test_ci_low": bt.get("ci_low"),
                    "test_ci_high": bt.get("ci_high"),
                    "vs_seed": r.test_comparison,
                    "improved": r.improved,
                    "best_prompt_id": r.best_prompt.id,
                    **_usage(r),
                }
            )
        rows.append(
            {
                "optimizer": name,
                "n_seeds": len(keys),
                "test_mean": mean(means),
                "test_sd": statistics.stdev(means) if len(means) > 1 else 0.0,
                "test_min": min(means),
                "test_max": max(means),
                "test_ci_low": lo,
                "test_ci_high": hi,
                "ci_method": interval_method(list(best.values())),
                "vs_seed": _paired(seed_scores, best),
                "vs_leader": None,
                **{k: mean([u[k] for u in usages]) for k in ("calls", "search_calls", "tokens", "cost", "seconds")},
                "runs": runs,
            }
        )
    rows.sort(key=lambda r: (-r["test_mean"], r["search_calls"], r["optimizer"]))
    leader = rows[0]["optimizer"]
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
        row["vs_leader"] = (
            None if row["optimizer"] == leader else _paired(best_scores[leader], best_scores[row["optimizer"]])
        )
    return {
        "format": LEADERBOARD_FORMAT,
        "task": task,
        "metric": metric,
        "n_test": n_test,
        "seeds": list(seeds),
        "leader": leader,
        "rows": [{"rank": r["rank"], **{k: v for k, v in r.items() if k != "rank"}} for r in rows],
    }


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """A leaderboard row flattened to :data:`CSV_COLUMNS`."""
    flat = {k: row.get(k) for k in CSV_COLUMNS}
    for side in ("vs_seed", "vs_leader"):
        c = row.get(side) or {}
        flat.update({f"{side}_diff": c.get("diff"), f"{side}_ci_low": c.get("ci_low")})
        flat.update({f"{side}_ci_high": c.get("ci_high"), f"{side}_p": c.get("p_value")})
    return flat


def write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(csv_row(r) for r in rows)
