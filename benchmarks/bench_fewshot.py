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


def small_task(name: str) -> Any:
    """The shipped task cut to the benchmark's split sizes (the first examples of each seeded split)."""
    from promptopt.taskfile import load_task

    task = load_task(ROOT / "tasks" / name)
    return dataclasses.replace(task, splits={k: task.splits[k][:n] for k, n in SIZES.items()})


def summary(result: Any) -> dict[str, Any]:
    lo, hi = result.ci
    return {"mean": result.mean, "ci": [lo, hi], "n": result.n}


# -- demo placement ----------------------------------------------------------------------------------------
def placement(model: Any, tasks: list[str]) -> dict[str, Any]:
    from promptopt.budget import BudgetTracker
    from promptopt.cache import ResponseCache
    from promptopt.candidate import DEMO_FORMATS
    from promptopt.client import ModelClient
    from promptopt.evaluation import Evaluator, compare

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
    from promptopt.candidate import DEMO_FORMATS

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
            cell = f"{r['mean']:.2f} [{r['ci'][0]:.2f}, {r['ci'][1]:.2f}]"
            if r["vs_inline"]:
                d = r["vs_inline"]
                cell += f" (Δ {d['diff']:+.2f} [{d['ci_low']:+.2f}, {d['ci_high']:+.2f}])"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    means = {fmt: sum(r[fmt]["mean"] for r in report["rows"].values()) / len(report["rows"]) for fmt in DEMO_FORMATS}
    lines += ["", "Mean over tasks: " + ", ".join(f"{k} {v:.3f}" for k, v in means.items()) + "."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--placement", action="store_true", help="measure where the demos go")
    parser.add_argument("--tasks", default="", help="comma-separated tasks (default: all of the part)")
    args = parser.parse_args()
    from promptopt.models import get_model

    model = get_model("smollm2")
    if args.placement:
        tasks = args.tasks.split(",") if args.tasks else list(PLACEMENT_TASKS)
        report = {"provenance": provenance(), "rows": placement(model, tasks)}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "fewshot_placement.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "fewshot_placement.md").write_text(placement_markdown(report))
        return
    sys.exit("the method table is not written yet")


if __name__ == "__main__":
    main()
