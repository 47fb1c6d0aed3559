"""Benchmark: the feedback-control optimizer (P vs PI vs PID vs the seed prompt) on the embedded model.

SmolLM2-135M-Instruct (``smollm2``) is both the task model and the corrector. Every controller gets the
same call budget on every task; each run has its own fresh response cache, so no run is subsidised by
another's cache hits. Dev is cut to ``--dev`` examples (the measured plant output), test to ``--test``;
test scores are computed after the runs with one shared cache (the seed prompt is scored once per task).

Writes ``benchmarks/results/feedback.md`` (the table), ``feedback.json`` (all numbers and trajectories)
and the plots ``feedback_<task>_<controller>.png`` and ``feedback_errors.png``. Needs the ``hf`` and
``bench`` extras. Run it single-threaded on a shared machine::

    OMP_NUM_THREADS=1 python benchmarks/bench_feedback.py
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

from provenance import provenance

import promptopt
from promptopt import Budget
from promptopt.core.task import Task
from promptopt.evaluation.evaluator import compare
from promptopt.models import get_model
from promptopt.models.cache import ResponseCache
from promptopt.optimizers.feedback_trajectory import plot_trajectory, read_trajectory
from promptopt.run.result import OptimizationResult

HERE = Path(__file__).resolve().parent
NOTES = "<!-- notes: hand-written below this line, kept when the table is regenerated -->\n"
CONTROLLERS = ("p", "pi", "pid")
OVERRIDES: dict[str, Any] = {"n_samples": 2, "max_tokens": 64}
"""Applied to every preset: fewer, shorter corrector samples keep a run within a few minutes on a CPU."""


def subset(task: Task, *, dev: int, test: int) -> Task:
    """The task with its first ``dev`` dev and ``test`` test examples (the splits are already shuffled)."""
    splits = {**task.splits, "dev": task.dev[:dev], "test": task.test[:test]}
    return dataclasses.replace(task, splits=splits, source=f"{task.source} (dev {dev}, test {test})")


def run_one(task: Task, controller: str, model: Any, args: argparse.Namespace, run_dir: Path) -> dict[str, Any]:
    if (run_dir / "result.json").is_file():
        result = OptimizationResult.load(run_dir)
        wall = json.loads((run_dir / "bench.json").read_text())["wall_seconds"]
    else:
        for stale in (run_dir, run_dir.with_name(run_dir.name + ".cache.sqlite")):  # an interrupted run
            if stale.is_dir():
                shutil.rmtree(stale)
            elif stale.exists():
                stale.unlink()
        opt = promptopt.load_optimizer(controller, **OVERRIDES)
        started = time.monotonic()
        result = promptopt.optimize(
            task,
            opt,
            model,
            budget=Budget(max_calls=args.budget),
            seed=args.seed,
            run_dir=run_dir,
            cache=run_dir.with_name(run_dir.name + ".cache.sqlite"),
            evaluate_test=False,
        )
        wall = time.monotonic() - started
        (run_dir / "bench.json").write_text(json.dumps({"wall_seconds": wall}))
    tr = read_trajectory(run_dir)
    resp = tr.response(band=opt_tolerance(result))
    limited = result.usage["by_role"]
    calls = sum(limited.get(role, {}).get("calls", 0) for role in ("task", "proposer"))
    return {
        "task": task.name,
        "method": controller.upper(),
        "result": result,
        "calls": calls,
        "proposer_calls": limited.get("proposer", {}).get("calls", 0),
        "wall_seconds": wall,
        "trajectory": tr,
        "response": resp,
        "run_dir": run_dir,
    }


def opt_tolerance(result: OptimizationResult) -> float:
    return float(result.optimizer_config.get("tolerance", 0.02))


def fmt(s: dict[str, Any]) -> str:
    return f"{s['mean']:.3f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"


def plot_errors(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in rows}, key=[r["task"] for r in rows].index)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False, constrained_layout=True)
    for ax, name in zip(axes[0], tasks, strict=True):
        for k, r in enumerate(x for x in rows if x["task"] == name):
            tr = r["trajectory"]
            errors = [tr.setpoint - y for y in tr.plant_scores]
            ax.plot(range(len(errors)), errors, "-o", ms=3, color=f"C{k}", label=r["method"])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("evaluation")
        ax.set_ylabel("error e = setpoint − dev score")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(rows: list[dict[str, Any]], seeds: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# Feedback-control optimizer: P vs PI vs PID (SmolLM2-135M)",
        "",
        f"Task model and corrector: `smollm2` (SmolLM2-135M-Instruct, CPU). Budget: {args.budget} model calls per "
        f"run (task + corrector; fresh cache per run). Dev = first {args.dev} dev examples (the measured plant "
        f"output), test = first {args.test} test examples, seed {args.seed}, one run per cell. Presets "
        f"`optimizers/{{p,pi,pid}}.yaml` with {OVERRIDES}. `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}`, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs (shared machine).",
        "",
        "Scores are accuracy with 95 % bootstrap CIs. Δtest is the paired bootstrap of best − seed on the same "
        "test examples. *calls* = model calls the run spent (corrector calls in brackets). *evals* = prompts "
        "measured on dev (seed included). *overshoot* and *settling* are step-response metrics of the dev score "
        "trajectory against its final value (settling band = the tolerance, 0.02).",
        "",
        "| task | method | dev | test | Δtest vs seed [95% CI] | calls (corrector) | evals | stop | overshoot "
        "| settling | wall |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, seed in seeds.items():
        lines.append(f"| {name} | seed prompt | {fmt(seed['dev'])} | {fmt(seed['test'])} | — | 0 | 1 | — | — | — | — |")
        for r in (x for x in rows if x["task"] == name):
            res: OptimizationResult = r["result"]
            c = r["comparison"]
            delta = f"{c['diff']:+.3f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]"
            stop = res.stop_reason.split(":")[0]
            resp = r["response"]
            lines.append(
                f"| {name} | {r['method']} | {fmt(res.best_dev)} | {fmt(r['test'])} | {delta} | "
                f"{r['calls']} ({r['proposer_calls']}) | {len(r['trajectory'].scores)} | {stop} | "
                f"{resp.overshoot:.0%} | {resp.settling_steps if resp.settling_steps is not None else '—'} | "
                f"{r['wall_seconds'] / 60:.1f} min |"
            )
    lines += ["", "Best prompts:", ""]
    for r in rows:
        res = r["result"]
        origin = "the seed prompt (no correction scored higher)" if not res.improved else f"`{res.best_prompt.id}`"
        lines.append(f"- **{r['task']} / {r['method']}** → {origin}: “{res.best_prompt.instruction}”")
    lines += ["", "Rejected corrector proposals per run (reason: count):", ""]
    for r in rows:
        rej = ", ".join(f"{k}: {v}" for k, v in sorted(r["result"].rejected.items())) or "none"
        lines.append(f"- {r['task']} / {r['method']}: {rej}")
    lines += [
        "",
        "Plots: `feedback_errors.png` (error per evaluation, all runs) and `feedback_<task>_<controller>.png` "
        "(score, e/P/I/D/u per controller tick, words allowed vs changed).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", nargs="+", default=["sst2", "trec", "esnli"])
    ap.add_argument("--controllers", nargs="+", default=list(CONTROLLERS), choices=CONTROLLERS)
    ap.add_argument("--dev", type=int, default=30)
    ap.add_argument("--test", type=int, default=100)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=Path, default=Path("/tmp/promptopt-bench/feedback"))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    args.runs.mkdir(parents=True, exist_ok=True)
    model = get_model("smollm2")
    test_cache = ResponseCache(args.runs / "test-cache.sqlite")
    rows: list[dict[str, Any]] = []
    seeds: dict[str, dict[str, Any]] = {}
    t0 = time.monotonic()
    for name in args.tasks:
        task = subset(promptopt.load_task(name), dev=args.dev, test=args.test)
        seed_test = promptopt.evaluate(task, model, split="test", cache=test_cache)
        for controller in args.controllers:
            print(f"[{time.monotonic() - t0:6.0f}s] {name} / {controller}", flush=True)
            row = run_one(task, controller, model, args, args.runs / f"{name}-{controller}")
            res: OptimizationResult = row["result"]
            best_test = promptopt.evaluate(task, model, res.best_prompt, split="test", cache=test_cache)
            row["test"] = best_test.summary()
            row["comparison"] = compare(seed_test, best_test).to_dict()
            seeds[name] = {"dev": res.baseline_dev, "test": seed_test.summary()}
            plot_trajectory(
                row["run_dir"],
                args.out / f"feedback_{name}_{controller}.png",
                title=f"{name} · {controller.upper()} · smollm2 · {row['calls']} calls",
            )
            rows.append(row)
            print(
                f"    dev {res.baseline_dev['mean']:.3f} -> {res.best_dev['mean']:.3f}, "
                f"test {seed_test.mean:.3f} -> {best_test.mean:.3f}, {row['calls']} calls, {res.stop_reason}",
                flush=True,
            )
    plot_errors(rows, args.out / "feedback_errors.png")
    report = args.out / "feedback.md"
    notes = report.read_text().partition(NOTES)[2] if report.is_file() else ""
    report.write_text(write_report(rows, seeds, args) + NOTES + (notes or "\n"))
    dump = [
        {
            "task": r["task"],
            "method": r["method"],
            "dev": r["result"].best_dev,
            "seed_dev": r["result"].baseline_dev,
            "test": r["test"],
            "seed_test": seeds[r["task"]]["test"],
            "test_comparison": r["comparison"],
            "calls": r["calls"],
            "stop_reason": r["result"].stop_reason,
            "rejected": r["result"].rejected,
            "best_instruction": r["result"].best_prompt.instruction,
            "wall_seconds": round(r["wall_seconds"], 1),
            "response": r["response"].to_dict(),
            "scores": list(r["trajectory"].scores),
            "ticks": list(r["trajectory"].ticks),
        }
        for r in rows
    ]
    (args.out / "feedback.json").write_text(
        json.dumps({"provenance": provenance(), "runs": dump}, indent=1, ensure_ascii=False) + "\n"
    )
    print(f"done in {(time.monotonic() - t0) / 60:.1f} min; wrote {args.out / 'feedback.md'}")


if __name__ == "__main__":
    main()
