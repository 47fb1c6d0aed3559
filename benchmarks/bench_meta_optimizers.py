"""Seed prompt vs the meta-prompt family (pe2, apo, opro, ape) on the embedded model, at one call budget.

Task model and proposer are both ``smollm2`` (SmolLM2-135M-Instruct, CPU). For every task the seed prompt is
scored first on dev and test; each optimizer then runs with its own response cache, a copy of the one holding
only those seed evaluations (so each method's budget is spent on its own search alone, and no method reuses
another's answers), from its shipped preset with the same call budget and seed, and
its best prompt is scored on the held-out test split against the seed (paired bootstrap CI of the
difference). Results go to ``benchmarks/results/meta_optimizers.md`` (table) and ``.json`` (raw numbers);
a (task, method) already in the JSON with the same settings (and the same overrides for that method) is not
run again, and new rows are merged into the existing ones, so ``--methods pe2-compact`` adds (or, with
``--rerun``, replaces) the rows of one method without touching the others. Free-text ``notes`` in the
JSON are rendered at the end of the markdown (``--render-only`` re-renders without running).

Run it on an otherwise idle machine, single-threaded (the numbers record the CPU other processes used)::

    OMP_NUM_THREADS=1 python benchmarks/bench_meta_optimizers.py
    OMP_NUM_THREADS=1 python benchmarks/bench_meta_optimizers.py --methods pe2 pe2-compact --rerun
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
from promptopt.api import evaluate
from promptopt.core.task import Task
from promptopt.core.taskfile import load_task
from promptopt.models import get_model
from promptopt.models.budget import Budget
from promptopt.models.cache import ResponseCache, promptopt_home
from promptopt.optimizers.presets import load_optimizer
from promptopt.run.rundir import new_run_dir

HERE = Path(__file__).resolve().parent
TASKS = ("ii_larger_animal", "ii_antonyms", "sst2", "bbh_navigate")
METHODS = ("pe2", "pe2-compact", "apo", "opro", "ape")
"""Preset names (``optimizers/<method>.yaml``)."""
OVERRIDES: dict[str, dict[str, Any]] = {
    # More steps than the presets' so that the call budget, not the step count, is what ends a run (APE's
    # preset already spends it); shorter proposer replies (an instruction fits in 64 tokens) so that 16 runs
    # of a 135M proposer fit in about 40 minutes of one CPU thread. Everything else is the shipped preset.
    "pe2": {"n_steps": 10, "max_tokens": 64, "reasoning_max_tokens": 96},
    "pe2-compact": {"n_steps": 10, "max_tokens": 64, "reasoning_max_tokens": 96},
    "apo": {"n_steps": 10, "max_tokens": 64, "gradient_max_tokens": 96},
    "opro": {"n_steps": 10, "max_tokens": 64},
    "ape": {"max_tokens": 64},
}


class CpuMeter:
    """Share of the machine's CPU used by *other* processes while a block runs (from /proc/stat)."""

    def __init__(self) -> None:
        self.start = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float]:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
        busy, total = sum(fields) - fields[3] - fields[4], sum(fields)
        own = sum(os.times()[:4]) * hz
        return busy, total, own

    def other_cpu(self) -> float:
        busy, total, own = (b - a for a, b in zip(self.start, self._read(), strict=True))
        return max(0.0, (busy - own) / total) if total else 0.0


def ci(s: dict[str, Any] | None) -> str:
    return "n/a" if not s else f"{s['mean']:.3f} [{s['ci_low']:.2f}, {s['ci_high']:.2f}]"


def delta(c: dict[str, Any] | None) -> str:
    if not c:
        return "n/a"
    star = " *" if c["ci_low"] > 0 or c["ci_high"] < 0 else ""
    return f"{c['diff']:+.3f} [{c['ci_low']:+.2f}, {c['ci_high']:+.2f}]{star}"


def calls(r: dict[str, Any]) -> str:
    roles = r.get("calls_by_role")
    return f"{r['calls']} ({roles.get('task', 0)} + {roles.get('proposer', 0)})" if roles else str(r["calls"])


def accepted(r: dict[str, Any]) -> str:
    return "n/a" if r.get("accepted") is None else f"{r['accepted']} / {r['promoted']}"


def bench_task(name: str, dev_size: int) -> Task:
    task = load_task(name)
    return dataclasses.replace(task, splits={**task.splits, "dev": task.dev[:dev_size]}, source="<python>")


def run_one(task: Task, method: str, model: Any, args: argparse.Namespace, cache: ResponseCache) -> dict[str, Any]:
    opt = load_optimizer(method, **OVERRIDES[method])
    meter, t0 = CpuMeter(), time.monotonic()
    result = promptopt.optimize(
        task,
        opt,
        model,
        proposer=model,
        budget=Budget(max_calls=args.budget),
        seed=args.seed,
        cache=cache,
        run_dir=new_run_dir(args.runs_dir, task.name, method),
    )
    by_role = result.usage["by_role"]
    accepted, promoted = proposals(Path(result.run_dir)) if result.run_dir else (None, None)
    return {
        "task": task.name,
        "method": method,
        "preset": method,
        "config": result.optimizer_config,
        "dev": result.best_dev,
        "test": result.best_test,
        "delta_test": result.test_comparison,
        "calls": by_role.get("task", {}).get("calls", 0) + by_role.get("proposer", {}).get("calls", 0),
        "calls_by_role": {k: v["calls"] for k, v in by_role.items()},
        "n_trials": result.n_trials,
        "rejected": result.rejected,
        "accepted": accepted,
        "promoted": promoted,
        "stop_reason": result.stop_reason,
        "best_instruction": result.best_prompt.instruction,
        "improved": result.improved,
        "seconds": round(time.monotonic() - t0, 1),
        "other_cpu": round(meter.other_cpu(), 3),
        "run_dir": result.run_dir,
    }


def proposals(run_dir: Path) -> tuple[int, int]:
    """Proposals that passed screening (evaluated at least on a race minibatch) and those promoted to full dev."""
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    children = [r for r in rows if r["prompt"]["parents"]]
    return len({r["prompt"]["id"] for r in children}), len({r["prompt"]["id"] for r in children if r["full"]})


def seed_row(task: Task, model: Any, cache: ResponseCache) -> dict[str, Any]:
    meter, t0 = CpuMeter(), time.monotonic()
    dev = evaluate(task, model, split="dev", cache=cache)
    test = evaluate(task, model, split="test", cache=cache)
    return {
        "task": task.name,
        "method": "seed",
        "dev": dev.summary(),
        "test": test.summary(),
        "delta_test": None,
        "calls": 0,
        "n_trials": 1,
        "rejected": {},
        "stop_reason": "",
        "best_instruction": task.instruction,
        "improved": False,
        "seconds": round(time.monotonic() - t0, 1),
        "other_cpu": round(meter.other_cpu(), 3),
    }


def write_markdown(payload: dict[str, Any], path: Path) -> None:
    s = payload["settings"]
    rows = payload["rows"]
    lines = [
        "# Meta-prompt optimizers on the embedded model",
        "",
        f"Task model and proposer: `{s['model']}`; call budget {s['budget']} per run (task + proposer calls, the "
        f"seed's own evaluation excluded — it is cached before the runs); dev = first {s['dev_size']} examples of "
        f"the shipped dev split; test = the shipped test split; seed {s['seed']}; `OMP_NUM_THREADS="
        f"{s['omp_num_threads']}`; {s['machine']}. Generated by `benchmarks/bench_meta_optimizers.py`.",
        "",
        "Means with 95% bootstrap CIs; Δ test is best − seed on the same test examples (paired bootstrap 95% CI; "
        "`*` = the CI excludes 0). Calls used = budgeted calls the method paid for (task model + proposer); every "
        "run starts from a fresh response cache holding only the seed prompt's evaluations. Presets as shipped, "
        "with the overrides listed below.",
        "",
        "| task | method | dev mean [95% CI] | test mean [95% CI] | calls used | Δ test vs seed [95% CI] | "
        "trials | proposals evaluated / promoted to full dev | rejected proposals | time (other CPU) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rej = sum(r["rejected"].values())
        top = ", ".join(f"{k} {v}" for k, v in sorted(r["rejected"].items(), key=lambda kv: -kv[1])[:2])
        lines.append(
            f"| {r['task']} | {r['method']} | {ci(r['dev'])} | {ci(r['test'])} | {calls(r)} | "
            f"{delta(r['delta_test'])} | {r['n_trials']} | {accepted(r)} | {rej}{f' ({top})' if top else ''} | "
            f"{r['seconds']:.0f}s ({100 * r['other_cpu']:.0f}%) |"
        )
    lines += ["", "## Best instructions", ""]
    for r in rows:
        mark = "" if r["method"] == "seed" else (" (seed kept)" if not r["improved"] else "")
        lines.append(f"- **{r['task']} / {r['method']}**{mark}: {r['best_instruction'][:300]!r}")
    lines += ["", "## Verdict", ""]
    for task in dict.fromkeys(r["task"] for r in rows):
        wins = [
            r["method"]
            for r in rows
            if r["task"] == task and r["delta_test"] and r["delta_test"]["ci_low"] > 0 and r["method"] != "seed"
        ]
        losses = [
            r["method"]
            for r in rows
            if r["task"] == task and r["delta_test"] and r["delta_test"]["ci_high"] < 0 and r["method"] != "seed"
        ]
        text = (
            f"significantly better than the seed on test: {', '.join(wins)}"
            if wins
            else ("no optimizer beats the seed prompt on test with a CI excluding 0")
        )
        if losses:
            text += f"; significantly worse: {', '.join(losses)}"
        lines.append(f"- **{task}**: {text}.")
    lines += ["", "## Settings", "", "```json", json.dumps(s, indent=1), "```", ""]
    if payload.get("notes"):
        lines += ["## Notes", "", payload["notes"].strip(), ""]
    path.write_text("\n".join(lines))


def check_seed(rows: list[dict[str, Any]], new: dict[str, Any]) -> None:
    """Warn when re-evaluating a seed prompt (to rebuild its cache) does not reproduce the stored row."""
    for r in rows:
        if (r["task"], r["method"]) == (new["task"], "seed"):
            for split in ("dev", "test"):
                if abs(r[split]["mean"] - new[split]["mean"]) > 1e-9:
                    print(f"warning: {new['task']} seed {split} changed {r[split]['mean']} -> {new[split]['mean']}")


def fresh_cache(seed_cache: Path, path: Path) -> ResponseCache:
    """A run's own response cache: a copy of the one holding only the seed prompt's evaluations."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(seed_cache, path)
    return ResponseCache(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", nargs="+", default=list(TASKS))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--budget", type=int, default=300)
    ap.add_argument("--dev-size", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="smollm2")
    ap.add_argument("--out", default=str(HERE / "results" / "meta_optimizers.md"))
    ap.add_argument("--cache-dir", default=str(promptopt_home() / "bench_meta_optimizers_cache"))
    ap.add_argument("--runs-dir", default=str(promptopt_home() / "bench_meta_optimizers_runs"))
    ap.add_argument("--fresh", action="store_true", help="ignore results already in the JSON")
    ap.add_argument("--rerun", action="store_true", help="run the --methods again, replacing their rows")
    ap.add_argument("--render-only", action="store_true", help="rewrite the markdown from the JSON and stop")
    args = ap.parse_args()

    out_md = Path(args.out)
    out_json = out_md.with_suffix(".json")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    if args.render_only:
        write_markdown(json.loads(out_json.read_text()), out_md)
        return
    settings = {
        "model": args.model,
        "budget": args.budget,
        "dev_size": args.dev_size,
        "seed": args.seed,
        "overrides": OVERRIDES,
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "machine": f"{os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}",
    }
    payload: dict[str, Any] = {"settings": settings, "rows": []}
    shared = ("machine", "overrides")  # overrides are compared per method
    if out_json.is_file() and not args.fresh:
        old = json.loads(out_json.read_text())
        if {k: v for k, v in old["settings"].items() if k not in shared} == {
            k: v for k, v in settings.items() if k not in shared
        }:
            # keep the rows of methods run with the same overrides; the others are run again
            payload = {**old, "settings": {**old["settings"], "overrides": OVERRIDES}}
            same = {m for m in METHODS if old["settings"]["overrides"].get(m) == OVERRIDES[m]} | {"seed"}
            payload["rows"] = [r for r in old["rows"] if r["method"] in same]
    rerun = set(args.methods) if args.rerun else set()
    done = {(r["task"], r["method"]) for r in payload["rows"] if r["method"] not in rerun}
    cache_dir = Path(args.cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    model = get_model(args.model)
    for name in args.tasks:
        task = bench_task(name, args.dev_size)
        seed_cache = cache_dir / f"{task.name}-seed.sqlite"
        for method in ("seed", *args.methods):
            if (task.name, method) in done and (method != "seed" or seed_cache.is_file()):
                continue
            if method == "seed":
                seed_cache.unlink(missing_ok=True)
                cache = ResponseCache(seed_cache)
                row = seed_row(task, model, cache)
                check_seed(payload["rows"], row)
            else:
                cache = fresh_cache(seed_cache, cache_dir / f"{task.name}-{method}.sqlite")
                row = run_one(task, method, model, args, cache)
            cache.close()
            payload["rows"] = [r for r in payload["rows"] if (r["task"], r["method"]) != (task.name, method)]
            payload["rows"].append(row)
            order = {m: i for i, m in enumerate(("seed", *METHODS))}
            tasks = {t: i for i, t in enumerate(args.tasks)}
            payload["rows"].sort(key=lambda r: (tasks.get(r["task"], 99), order[r["method"]]))
            out_json.write_text(json.dumps({**payload, "provenance": provenance()}, indent=1) + "\n")
            write_markdown(payload, out_md)
            print(
                f"{task.name:20} {method:6} dev {ci(row['dev'])}  test {ci(row['test'])}  calls {row['calls']}  "
                f"{row['seconds']:.0f}s",
                flush=True,
            )


if __name__ == "__main__":
    main()
