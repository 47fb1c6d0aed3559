"""DSPy inside promptopt: the ``dspy-labeled`` and ``dspy-mipro`` presets on the few-shot benchmark's splits.

DSPy's teleprompters run on promptopt's client (``promptopt.models.dspy_lm``: one cache, one budget) and the compiled
program comes back as a promptopt prompt scored by the common evaluator (label scoring where the task has labels) —
unlike the DSPy leg of ``bench_fewshot.py``, which runs DSPy in its own venv and scores DSPy's own parsed answers
(``dspy_fewshot.py``). Same splits (train 32 / dev 32 / test 100), model (SmolLM2-135M-Instruct, fp32 CPU), seed 0,
``--budget`` calls per run and a fresh cache per run; the table puts the separate-venv cells of
``results/fewshot.json`` next to these.

    OMP_NUM_THREADS=1 python benchmarks/bench_dspy_interop.py --tasks sst2,ii_first_word_letter --methods dspy-labeled
    python benchmarks/bench_dspy_interop.py --report     # rewrite dspy_interop.md from dspy_interop.json
"""

from __future__ import annotations

import argparse
import json
import os

from bench_fewshot import RESULTS, fmt_delta, fmt_score, run_promptopt, small_task
from provenance import provenance

PATH = RESULTS / "dspy_interop.json"
METHODS = ("dspy-labeled", "dspy-mipro")


def run(tasks: list[str], methods: list[str], budget: int) -> None:
    from promptopt.models import get_model

    model, prov = get_model("smollm2"), provenance()
    rows = json.loads(PATH.read_text())["rows"] if PATH.is_file() else {}
    for name in tasks:
        for method in methods:
            started = {**prov, "load_start": [round(x, 2) for x in os.getloadavg()]}
            cell = run_promptopt(model, small_task(name), method, budget)
            rows.setdefault(name, {})[method] = {**cell, "provenance": started, "budget": budget}
            PATH.write_text(json.dumps({"rows": rows}, indent=1) + "\n")
            print(f"{name} {method}: test {cell['test']['mean']:.2f}, {cell['calls']} calls, {cell['seconds']:.0f}s")
            print("   notes:", cell["notes"], flush=True)


def report() -> str:
    rows = json.loads(PATH.read_text())["rows"]
    venv = json.loads((RESULTS / "fewshot.json").read_text())["rows"]
    lines = [
        "# DSPy inside promptopt vs DSPy in its own venv (train 32 / dev 32 / test 100)",
        "",
        "Written by `benchmarks/bench_dspy_interop.py` from `dspy_interop.json` (each cell records its commit, command "
        "and load). SmolLM2-135M-Instruct, fp32 CPU, seed 0, one fresh cache per run. *in promptopt*: the `dspy` "
        "optimizer's preset compiles through promptopt's client and the compiled prompt (instruction + demos in the "
        "task's template, demos as chat turns with the instruction in the system message as DSPy shows them) is "
        "scored by promptopt's evaluator; calls = search calls (DSPy's compile + the seed's and the compiled "
        "prompt's dev evaluations). *own venv*: `bench_fewshot.py`'s DSPy leg (`dspy_fewshot.py`, MIPROv2 "
        "`auto=light`), DSPy's own answers parsed from its field markers; calls = compile calls at its engine. "
        "Cell: test mean [95% CI]; Δ = paired difference vs the seed prompt on the same test examples.",
        "",
        "| task | method | in promptopt | calls | own venv | calls | DSPy parse failures (in promptopt) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, methods in rows.items():
        for method, c in methods.items():
            old = venv.get(name, {}).get(method)
            old_cell = (fmt_score(old["test"]) if old.get("test") else "error") if old else "–"
            old_calls = str(old.get("calls", "–")) if old else "–"
            notes = "; ".join(n.split(":", 1)[1].split("(", 1)[0].strip() for n in c["notes"]) or "none"
            ours = f"{fmt_score(c['test'])} ({fmt_delta(c['vs_seed'])})" if c.get("vs_seed") else fmt_score(c["test"])
            lines.append(f"| {name} | {method} | {ours} | {c['calls']} | {old_cell} | {old_calls} | {notes} |")
    missing = [f"{n} {m}" for n in rows for m in METHODS if m not in rows[n]]
    if missing:
        lines += ["", f"Not measured (no finished run): {', '.join(missing)}."]
    lines += ["", "Notes per run (the result's `notes`):", ""]
    for name, methods in rows.items():
        for method, c in methods.items():
            lines.append(f"- {name} {method} ({c['seconds']:.0f} s, stop: {c['stop_reason']}): {c['notes'] or 'none'}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default="sst2,ii_first_word_letter")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--budget", type=int, default=400)
    parser.add_argument("--report", action="store_true", help="only rewrite dspy_interop.md")
    args = parser.parse_args()
    if not args.report:
        run(args.tasks.split(","), args.methods.split(","), args.budget)
    (RESULTS / "dspy_interop.md").write_text(report())


if __name__ == "__main__":
    main()
