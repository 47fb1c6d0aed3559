"""Seed-methods part ``unsupervised``: label-free prompt learning with 0 labels vs labeled optimizers with 32.

On sst2, trec and esnli (the splits of ``bench_fewshot.py``: train 32 / dev 32 / test 100 from the task's seeded
pool; its ``small_task`` and ``run_promptopt`` helpers), embedded SmolLM2-135M-Instruct, ``--budget`` calls per run
(the held-out test evaluation not counted), one fresh response cache and run directory per run, seed 0:

- ``unsupervised`` on the task with every train target removed (:meth:`Task.without_train_targets`: the optimizer
  cannot read them) — 0 labels; it never selects by dev labels either (its one dev trial is the report);
- ``fewshot`` and ``auto`` with the 32 labeled train examples (and 32 labeled dev examples to race on).

Test mean with a 95% CI and the paired Δ vs the seed prompt on the same 100 test examples. For ``unsupervised`` the
table also gives how many of the final prompt's pseudo-labeled demos carry the true label (read here, after the
run, from the labeled train split). Writes ``benchmarks/results/seed_methods_unsupervised.{json,md}``; cells are
merged, so a restart skips the finished ones (``--rerun`` to redo them)::

    OMP_NUM_THREADS=1 python benchmarks/bench_seed_methods_unsupervised.py
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from bench_fewshot import RESULTS, fmt_delta, fmt_score, run_promptopt, small_task
from provenance import provenance

TASKS = ("sst2", "trec", "esnli")
METHODS = ("unsupervised", "fewshot", "auto")
LABELS = {"unsupervised": 0, "fewshot": 32, "auto": 32}
JSON = RESULTS / "seed_methods_unsupervised.json"


def cell(model: Any, name: str, method: str, budget: int) -> dict[str, Any]:
    """One run: ``unsupervised`` on the task without train targets, the others on the labeled task."""
    labeled = small_task(name)
    task = labeled.without_train_targets() if method == "unsupervised" else labeled
    out = run_promptopt(model, task, method, budget)
    if method == "unsupervised":  # scored here, after the run, against the labels the optimizer never saw
        demos = out["best"]["demos"]
        truth = {ex.id: ex.answer for ex in labeled.train}
        out["pseudo_demos"] = {"n": len(demos), "correct": sum(truth[i] == a for i, a in demos)}
    return out


def save(report: dict[str, Any]) -> None:
    """Merge ``report``'s cells into the results file under a lock (several processes may fill the table)."""
    import fcntl

    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / ".seed_methods_unsupervised.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        merged = json.loads(JSON.read_text()) if JSON.is_file() else {"rows": {}}
        for name, row in report["rows"].items():
            merged["rows"].setdefault(name, {}).update(row)
        merged.update({k: v for k, v in report.items() if k != "rows"})
        tmp = JSON.with_suffix(".tmp")
        tmp.write_text(json.dumps(merged, indent=1) + "\n")
        tmp.replace(JSON)
        JSON.with_suffix(".md").write_text(markdown(merged))


def markdown(report: dict[str, Any]) -> str:
    p = report["provenance"]
    lines = [
        "# Label-free prompt learning: `unsupervised` (0 labels) vs `fewshot` and `auto` (32 labels)",
        "",
        f"`{p['command']}` at commit `{p['commit'][:10]}`{' (uncommitted changes)' if p['dirty'] else ''}, "
        f"{p['started']}, load {p['load_start'][0]} at start, OMP_NUM_THREADS={p['threads']}. SmolLM2-135M-Instruct "
        f"(fp32 CPU, label scoring); train 32 / dev 32 / test 100 (the `bench_fewshot.py` splits), "
        f"{report['budget']} calls per run (test not counted), a fresh cache per run, seed 0. `unsupervised` runs on "
        "the task with its train targets removed and selects by agreement with its pseudo-labels (never by dev "
        "labels). Test mean [95% CI]; Δ = paired difference vs the seed prompt on the same test examples. The "
        "table may be filled by several processes (the line above names the last; the JSON keeps each cell's load). "
        "Last column: final demos whose pseudo-label is the true train label (checked after the run).",
        "",
        "| task | seed | unsupervised (0 labels) | fewshot (32 labels) | auto (32 labels) | pseudo-labeled demos |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["rows"].items():
        seed = next((c["seed_test"]["mean"] for c in row.values()), None)
        cells = [f"{seed:.2f}" if seed is not None else "–"]
        for m in METHODS:
            c = row.get(m)
            cells.append(f"{fmt_score(c['test'])} ({fmt_delta(c['vs_seed'])}), {c['calls']} calls" if c else "–")
        u = row.get("unsupervised", {}).get("pseudo_demos")
        cells.append(f"{u['correct']}/{u['n']}" if u else "–")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "Stop reasons and rounds of `unsupervised`:", ""]
    for name, row in report["rows"].items():
        if c := row.get("unsupervised"):
            lines.append(f"- {name}: {c['stop_reason']}; " + "; ".join(n.split(": ", 1)[1] for n in c["notes"]))
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budget", type=int, default=300, help="calls per optimizer run")
    parser.add_argument("--rerun", action="store_true")
    parser.add_argument("--report", action="store_true", help="only rewrite the .md from the .json")
    args = parser.parse_args()
    report = json.loads(JSON.read_text()) if JSON.is_file() else {"rows": {}}
    if args.report:
        save(report)
        return
    from promptopt.models import get_model

    model = get_model("smollm2")
    report.update(provenance=provenance(), budget=args.budget)
    for name in args.tasks.split(","):
        for method in args.methods.split(","):
            if method in report["rows"].get(name, {}) and not args.rerun:
                continue
            started = [round(x, 2) for x in os.getloadavg()]
            c = cell(model, name, method, args.budget)
            report["rows"].setdefault(name, {})[method] = {**c, "labels": LABELS[method], "load_start": started}
            save(report)
            print(f"{name} {method}: test {c['test']['mean']:.3f}, {c['calls']} calls, {c['seconds']:.0f}s", flush=True)


if __name__ == "__main__":
    main()
