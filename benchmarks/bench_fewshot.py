"""Few-shot demonstrations vs the text optimizers vs DSPy, on small splits (train 32 / dev 32 / test 100).

Two parts, both on the embedded SmolLM2-135M-Instruct (float32, CPU), every run with a fresh response cache:

``--placement``: the seed instruction + the same 4 labeled train demos, shown inline (inside the user message)
or as chat turns with the instruction in every user turn, the first user turn only, or the system message —
test score per form. This decides the demo formats optimizers search by default.

The method table (default): for each task, ``--budget`` calls per optimizer run (task model and proposer, the
held-out test evaluation not counted), the same splits for every method: the seed prompt, ``fewshot`` with
demos inline only and as turns only, ``ics``, ``structure-search``, ``auto`` and ``soft-prompt``; test mean with
a 95% CI, paired Δ vs the seed prompt on the same test examples, calls. DSPy ``LabeledFewShot(k=4)`` and
``MIPROv2(auto="light")`` run on the same splits and the same in-process model in their own venv
(``benchmarks/dspy_fewshot.py``, ``--dspy-python``); their raw test answers are scored here with the task's
own parser and metric, and their model calls are counted at the engine.

    OMP_NUM_THREADS=1 python benchmarks/bench_fewshot.py --placement
    OMP_NUM_THREADS=1 python benchmarks/bench_fewshot.py --tasks ii_antonyms,sst2 --methods seed,fewshot
    python benchmarks/bench_fewshot.py --report     # rewrite fewshot.md from fewshot.json

Results: ``benchmarks/results/fewshot.json`` and ``fewshot.md`` (rows are merged per task and method, so the
table can be filled in several runs; each row keeps the provenance of the run that made it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import provenance

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
II_TASKS = (
    "ii_antonyms",
    "ii_first_word_letter",
    "ii_larger_animal",
    "ii_letters_list",
    "ii_negation",
    "ii_num_to_verbal",
    "ii_singular_to_plural",
    "ii_sentiment",
)
TASKS = (*II_TASKS, "sst2", "trec", "bbh_navigate", "bbh_sports_understanding")
SIZES = {"train": 32, "dev": 32, "test": 100}
PLACEMENT_TASKS = ("ii_antonyms", "ii_first_word_letter", "ii_larger_animal", "ii_singular_to_plural", "sst2", "trec")
METHODS = ("seed", "fewshot-inline", "fewshot-turns", "auto", "ics", "structure-search", "soft-prompt")
DSPY_METHODS = {"dspy-labeled": "labeled", "dspy-mipro": "mipro"}


def small_task(name: str) -> Any:
    """The shipped task cut to the benchmark's split sizes (the first examples of each seeded split)."""
    from promptopt.core.taskfile import load_task

    task = load_task(ROOT / "tasks" / name)
    return dataclasses.replace(task, splits={k: task.splits[k][:n] for k, n in SIZES.items()})


def summary(result: Any) -> dict[str, Any]:
    lo, hi = result.ci
    return {"mean": result.mean, "ci": [lo, hi], "n": result.n}


# -- demo placement ----------------------------------------------------------------------------------------
def placement(model: Any, tasks: list[str]) -> dict[str, Any]:
    from promptopt.core.candidate import DEMO_FORMATS
    from promptopt.evaluation.evaluator import Evaluator, compare
    from promptopt.models.budget import BudgetTracker
    from promptopt.models.cache import ResponseCache
    from promptopt.models.client import ModelClient

    rows = {}
    for name in tasks:
        task = small_task(name)
        demos = tuple(random.Random(0).sample(list(task.train), 4))
        with tempfile.TemporaryDirectory() as tmp:
            client = ModelClient(model, cache=ResponseCache(Path(tmp) / "cache.sqlite"), budget=BudgetTracker())
            evaluator = Evaluator(task, client)
            seed = evaluator.evaluate(task.seed_prompt(), split="test")
            row = {"seed": summary(seed)}
            results = {}
            for fmt in DEMO_FORMATS:  # inline first
                started = time.monotonic()
                prompt = dataclasses.replace(task.seed_prompt(), demos=demos, demo_format=fmt)
                results[fmt] = res = evaluator.evaluate(prompt, split="test")
                vs_inline = compare(results["inline"], res).to_dict() if fmt != "inline" else None
                row[fmt] = {**summary(res), "seconds": time.monotonic() - started, "vs_inline": vs_inline}
        rows[name] = row
        print(name, {k: round(v["mean"], 3) for k, v in row.items()}, flush=True)
    return rows


def placement_markdown(report: dict[str, Any]) -> str:
    from promptopt.core.candidate import DEMO_FORMATS

    p = report["provenance"]
    lines = [
        "# Where the demos go: inline vs chat turns",
        "",
        f"`{p['command']}` at commit `{p['commit'][:10]}`{' (uncommitted changes)' if p['dirty'] else ''}, "
        f"{p['started']}, load {p['load_start'][0]} at start. SmolLM2-135M-Instruct, fp32 CPU; the task's seed "
        "instruction + the same 4 labeled train demos (seeded draw) in each form; first 100 test examples; "
        "mean [95% CI]; Δ = paired difference vs inline.",
        "",
        "| task | no demos | " + " | ".join(DEMO_FORMATS) + " |",
        "|---|---|" + "---|" * len(DEMO_FORMATS),
    ]
    for name, row in report["rows"].items():
        cells = [f"{row['seed']['mean']:.2f}"]
        for fmt in DEMO_FORMATS:
            r = row[fmt]
            cells.append(fmt_score(r) + (f" ({fmt_delta(r['vs_inline'])})" if r["vs_inline"] else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = {fmt: sum(r[fmt]["mean"] for r in report["rows"].values()) / len(report["rows"]) for fmt in DEMO_FORMATS}
    lines += ["", "Mean over tasks: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()) + "."]
    return "\n".join(lines) + "\n"


# -- the method table ---------------------------------------------------------------------------------------
def seed_test(model: Any, task: Any) -> Any:
    from promptopt.evaluation.evaluator import Evaluator
    from promptopt.models.budget import BudgetTracker
    from promptopt.models.client import ModelClient

    return Evaluator(task, ModelClient(model, cache=None, budget=BudgetTracker())).evaluate(
        task.seed_prompt(), split="test"
    )


def run_promptopt(model: Any, task: Any, method: str, budget: int) -> dict[str, Any]:
    """One optimizer run with a fresh cache and run directory; its result and spend."""
    import promptopt

    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        result = promptopt.optimize(
            task,
            method,
            model,
            budget=promptopt.Budget(max_calls=budget),
            cache=Path(tmp) / "cache.sqlite",
            run_dir=Path(tmp) / "run",
            seed=0,
            select="best",  # explicit: the table shows each run's best dev candidate; selection_analysis re-decides
        )
        seconds = time.monotonic() - started
    roles = result.usage["by_role"]
    return {
        "test": {"mean": result.best_test["mean"], "ci": [result.best_test["ci_low"], result.best_test["ci_high"]]},
        "vs_seed": result.test_comparison,
        "dev_vs_seed": result.dev_comparison,
        "seed_test": {"mean": result.baseline_test["mean"]},
        "calls": sum(roles.get(r, {}).get("calls", 0) for r in ("task", "proposer", "train")),
        "search": result.search,
        "selection": result.selection,
        "stop_reason": result.stop_reason,
        "notes": result.notes,
        "best": {
            "id": result.best_prompt.id,
            "instruction": result.best_prompt.instruction,
            "n_demos": len(result.best_prompt.demos),
            "demo_format": result.best_prompt.demo_format,
            "origin": result.best_prompt.origin,
            "demos": [[d.id, d.answer] for d in result.best_prompt.demos],
            "meta": {k: v for k, v in result.best_prompt.meta.items() if isinstance(v, str | int | float)},
        },
        "seconds": seconds,
    }


def run_dspy(python: str, name: str, method: str, time_limit: int) -> dict[str, Any]:
    """DSPy in its own venv on the same splits (``dspy_fewshot.py``); its raw output."""
    import subprocess

    from dspy_fewshot import make_spec

    with tempfile.TemporaryDirectory() as tmp:
        spec, out = Path(tmp) / "spec.json", Path(tmp) / "out.json"
        make_spec(name, str(spec), **{f"n_{k}": n for k, n in SIZES.items()})
        cmd = [python, str(HERE / "dspy_fewshot.py"), "--spec", str(spec), "--method", method, "--out", str(out)]
        cmd += ["--time-limit", str(time_limit)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if not out.is_file():
            return {"error": "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-5:])}
        return json.loads(out.read_text())


def dspy_cell(task: Any, raw: dict[str, Any], seed: Any) -> dict[str, Any]:
    """A DSPy run's raw test answers scored with the task's own parser and metric, paired with the seed."""
    from promptopt.evaluation.evaluator import EvalResult, ExampleRecord, compare

    calls = {"calls": raw.get("compile_calls", 0), "test_calls": raw.get("test_calls"), "failures": raw.get("failures")}
    if raw.get("error"):  # nothing to score (e.g. MIPROv2 stopped by an unparsable instruction proposal)
        return {"error": raw["error"].strip().splitlines()[0][:160], **calls}
    records = []
    for ex in task.test:
        text = raw["predictions"].get(ex.id)
        parsed = task.parser(text) if text is not None else None
        score = task.metric(parsed, ex) if parsed is not None else 0.0
        records.append(ExampleRecord(example_id=ex.id, prediction=parsed, score=score))
    result = EvalResult(prompt_id="dspy", split="test", mode="generate", records=tuple(records))
    return {
        "test": summary(result),
        "vs_seed": compare(seed, result).to_dict(),
        **calls,
        "seconds": raw.get("compile_seconds", 0) + raw.get("test_seconds", 0),
        "instruction": raw.get("instruction"),
        "dspy_versions": raw.get("versions"),
    }


def paired_lists(d: dict[str, Any]) -> tuple[list[float], list[float]]:
    """0/1 score lists with the paired table of a stored comparison (n, means, who was better where)."""
    n, only_a, only_b = d["n"], d["a_better"], d["b_better"]
    both = round(d["mean_a"] * n) - only_a
    neither = n - both - only_a - only_b
    if min(both, neither) < 0 or abs(both + only_b - d["mean_b"] * n) > 1e-6:
        raise ValueError(f"not a 0/1 paired table: {d}")
    a = [1.0] * both + [1.0] * only_a + [0.0] * only_b + [0.0] * neither
    b = [1.0] * both + [0.0] * only_a + [1.0] * only_b + [0.0] * neither
    return a, b


def restate_intervals(report: dict[str, Any]) -> int:
    """Recompute the intervals of cells made before ``promptopt.core.stats`` used Wilson / Newcombe intervals for 0/1
    scores (every task here is scored 0/1), from their stored counts; returns how many cells changed."""
    from promptopt.core.stats import mean_ci, paired_comparison

    changed = 0
    for row in report["rows"].values():
        for cell in row.values():
            vs = cell.get("vs_seed")
            if "test" not in cell or (vs is not None and "method" in vs) or "ci_method" in cell["test"]:
                continue
            for key in ("vs_seed", "dev_vs_seed"):
                if cell.get(key) is not None:
                    cell[key] = paired_comparison(*paired_lists(cell[key])).to_dict()
            n = cell["test"].get("n") or (vs or {}).get("n")
            scores = [1.0] * round(cell["test"]["mean"] * n) + [0.0] * (n - round(cell["test"]["mean"] * n))
            cell["test"] = {**cell["test"], "n": n, "ci": list(mean_ci(scores)), "ci_method": "wilson"}
            changed += 1
    return changed


def save_cell(task: str, method: str, cell: dict[str, Any]) -> None:
    """Merge one cell into fewshot.json under a file lock (several benchmark processes may share it)."""
    import fcntl

    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "fewshot.json"
    with open(RESULTS / ".fewshot.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        report = json.loads(path.read_text()) if path.is_file() else {"rows": {}}
        report["rows"].setdefault(task, {})[method] = cell
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(report, indent=1) + "\n")
        tmp.replace(path)
        (RESULTS / "fewshot.md").write_text(table_markdown(report))


def method_table(args: argparse.Namespace, model: Any) -> None:
    run = provenance()  # the code this process runs: taken once, before any later commit
    path = RESULTS / "fewshot.json"
    done = json.loads(path.read_text())["rows"] if path.is_file() else {}
    tasks = args.tasks.split(",") if args.tasks else list(TASKS)
    methods = args.methods.split(",") if args.methods else [*METHODS, *DSPY_METHODS]
    for name in tasks:
        task = small_task(name)
        seed = seed_test(model, task)
        for method in methods:
            if method in done.get(name, {}) and not args.rerun:
                continue
            started = {**run, "load_start": [round(x, 2) for x in os.getloadavg()]}
            if method == "seed":
                cell = {"test": summary(seed), "calls": 0}
            elif method in DSPY_METHODS:
                if not args.dspy_python:
                    continue
                raw = run_dspy(args.dspy_python, name, DSPY_METHODS[method], args.dspy_time_limit)
                cell = dspy_cell(task, raw, seed)
            else:
                cell = run_promptopt(model, task, method, args.budget)
            save_cell(name, method, {**cell, "provenance": started, "budget": args.budget})
            print(f"{name} {method}: {cell.get('test', {}).get('mean')} calls {cell.get('calls')}", flush=True)


def fmt_score(t: dict[str, Any]) -> str:
    return f"{t['mean']:.2f} [{t['ci'][0]:.2f}, {t['ci'][1]:.2f}]"


def fmt_delta(d: dict[str, Any]) -> str:
    text = f"Δ {d['diff']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}]"
    return f"**{text}**" if d["ci_low"] > 0 else text


def selection_analysis(report: dict[str, Any]) -> list[str]:
    """What ``select='significant'`` would have returned in each promptopt run: the best dev candidate only when
    its paired dev gain over the seed has a CI above 0, else the seed — scored on test from the same run."""
    runs = []
    for row in report["rows"].values():
        for m, c in row.items():
            if "dev_vs_seed" not in c or m.startswith("dspy") or m == "seed":
                continue
            d = c["dev_vs_seed"]
            keep = d is not None and d["ci_low"] > 0
            runs.append((c["test"]["mean"], c["test"]["mean"] if keep else c["seed_test"]["mean"], d is not None))
    changed = [(b, s) for b, s, moved in runs if moved and b != s]
    if not runs:
        return []
    best, sig = sum(r[0] for r in runs) / len(runs), sum(r[1] for r in runs) / len(runs)
    return [
        "",
        "## `select: best` vs `select: significant`",
        "",
        f"Over the {len(runs)} promptopt runs above, re-deciding each run's final prompt: mean test score "
        f"{best:.3f} with `best` (the default) vs {sig:.3f} with `significant`; the rule changed the outcome in "
        f"{len(changed)} runs: `significant` was better in {sum(s > b for b, s in changed)} and worse in "
        f"{sum(s < b for b, s in changed)}.",
    ]


def compact_table(report: dict[str, Any]) -> list[str]:
    """Test means only, **bold** where the paired Δ vs the seed has a CI above 0 (the README's table)."""
    methods = [m for m in (*METHODS, *DSPY_METHODS) if any(m in row for row in report["rows"].values())]
    lines = ["| task | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
    for name, row in report["rows"].items():
        cells = []
        for m in methods:
            c = row.get(m)
            if c is None:
                cells.append("–")
            elif "test" not in c:
                cells.append("error")
            else:
                d, mean = c.get("vs_seed"), f"{c['test']['mean']:.2f}"
                cells.append(f"**{mean}**" if d and m != "seed" and d["ci_low"] > 0 else mean)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def table_markdown(report: dict[str, Any]) -> str:
    methods = [*METHODS, *DSPY_METHODS]
    lines = [
        "# Few-shot demos vs the text optimizers vs DSPy (train 32 / dev 32 / test 100)",
        "",
        "Written by `benchmarks/bench_fewshot.py` from `fewshot.json` (each cell records its commit, command and "
        "load). SmolLM2-135M-Instruct as task model and proposer, fp32 CPU, budget 400 calls per optimizer run "
        "(test evaluation not counted), one fresh cache per run, seed 0, the same splits for every method. "
        "Cell: test mean [95% Wilson interval]; Δ = paired difference vs the seed prompt on the same 100 test "
        "examples [95% Newcombe interval for paired 0/1 scores] (**bold** when it is above 0; `promptopt.core.stats`, "
        "recomputed from the stored counts for cells made before it used these intervals); "
        "calls = search calls (task model + proposer + training examples; "
        "DSPy: model calls during compile, counted at its engine). – = not run.",
        "",
        "| task | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for name, row in report["rows"].items():
        cells = []
        for m in methods:
            c = row.get(m)
            if c is None or "test" not in c:
                cells.append("–" if c is None else f"error: {c.get('error')}")
                continue
            cell = fmt_score(c["test"])
            d = c.get("vs_seed")
            if d and m != "seed":
                cell += f" {fmt_delta(d)}"
            if m != "seed":
                cell += f", {c['calls']} calls"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Test means (bold: paired Δ vs the seed prompt above 0)", "", *compact_table(report)]
    lines += selection_analysis(report)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--placement", action="store_true", help="measure where the demos go")
    parser.add_argument("--tasks", default="", help="comma-separated tasks (default: all of the part)")
    parser.add_argument("--methods", default="", help="comma-separated methods (default: all)")
    parser.add_argument("--budget", type=int, default=400, help="calls per optimizer run")
    parser.add_argument("--rerun", action="store_true", help="re-run cells already in fewshot.json")
    parser.add_argument("--dspy-python", default="/work/venv-dspy/bin/python", help="the DSPy venv's python")
    parser.add_argument("--dspy-time-limit", type=int, default=3600, help="seconds per DSPy run")
    parser.add_argument("--report", action="store_true", help="only rewrite fewshot.md from fewshot.json")
    parser.add_argument(
        "--import-dspy", nargs=3, metavar=("TASK", "METHOD", "FILE"), help="add a dspy_fewshot.py result file"
    )
    args = parser.parse_args()
    if args.report:
        path = RESULTS / "fewshot.json"
        report = json.loads(path.read_text())
        if restated := restate_intervals(report):
            report["restated"] = {**provenance(), "cells": restated, "what": "intervals recomputed from stored counts"}
            path.write_text(json.dumps(report, indent=1) + "\n")
        (RESULTS / "fewshot.md").write_text(table_markdown(report))
        placed = RESULTS / "fewshot_placement.json"
        if placed.is_file():
            (RESULTS / "fewshot_placement.md").write_text(placement_markdown(json.loads(placed.read_text())))
        return
    if args.import_dspy:
        name, method, file = args.import_dspy
        raw = json.loads(Path(file).read_text())
        task = small_task(name)
        from promptopt.models import get_model

        cell = dspy_cell(task, raw, None if raw.get("error") else seed_test(get_model("smollm2"), task))
        save_cell(name, method, {**cell, "provenance": {**provenance(), "imported_from": file}, "budget": None})
        return
    from promptopt.models import get_model

    model = get_model("smollm2")
    if args.placement:
        tasks = args.tasks.split(",") if args.tasks else list(PLACEMENT_TASKS)
        report = {"provenance": provenance(), "rows": placement(model, tasks)}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "fewshot_placement.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "fewshot_placement.md").write_text(placement_markdown(report))
        return
    if args.dspy_python and not Path(args.dspy_python).exists():
        sys.exit(f"no DSPy venv at {args.dspy_python}; create it (benchmarks/dspy_fewshot.py) or pass --dspy-python ''")
    method_table(args, model)


if __name__ == "__main__":
    main()
