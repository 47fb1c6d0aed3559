"""Benchmark part ``gradient`` of issue 15: gradient_text vs the seed prompt vs a soft prompt vs that soft prompt
projected to its nearest vocabulary tokens, on SmolLM2-135M.

Per task (train 32 / dev 32 / test 100 from the task's pool, seed 0: ``bench_fewshot.small_task``, the same splits
for every method):

- **gradient_text** (preset ``gradient-text``) and **soft_prompt** (preset ``soft-prompt`` with a checkpoint every
  6 steps, so three checkpoints fit) each run once with ``--budget`` calls, a fresh cache and run directory, seed 0;
- **projected**: the best soft-prompt checkpoint by dev (the run's best, or its best checkpoint when the seed stayed
  best) projected to its nearest tokens (:func:`promptopt.models.projection.project_soft_prompt`), the text placed at
  the start of the system message and, separately, before the instruction;
- everything is scored on test by one evaluator per task (its own fresh cache); the gradient_text prompt also in
  generation mode (the model writes its answer, parsed, as an API model would use the prompt). Test means with 95%
  CIs; Δ = paired difference [95% CI] against the seed (and the projection against the soft prompt).

Writes ``benchmarks/results/seed_methods_gradient.{json,md}`` (each task's cell as soon as it is done). Run it
single-threaded::

    OMP_NUM_THREADS=1 python benchmarks/bench_seed_methods_gradient.py
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_fewshot import SIZES, fmt_delta, fmt_score, small_task
from provenance import provenance

import promptopt
from promptopt.core.candidate import Prompt
from promptopt.evaluation.evaluator import EvalResult, Evaluator, compare
from promptopt.models.budget import BudgetTracker
from promptopt.models.cache import ResponseCache
from promptopt.models.client import ModelClient

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TASKS = ("sst2", "ii_antonyms", "ii_larger_animal", "ii_singular_to_plural", "trec")
"""sst2 and trec, and three Instruction-Induction tasks where soft prompts beat the seed (results/fewshot.md)."""
SOFT_OVERRIDES = {"eval_every": 6, "max_steps": 48}
METHODS = (
    "seed", "gradient_text", "seed_generate", "gradient_text_generate", "soft_prompt", "projected_system",
    "projected_instruction",
)  # fmt: skip


def run_optimizer(task: Any, optimizer: promptopt.Optimizer, model: Any, budget: int, tmp: Path) -> Any:
    """One search (no test evaluation: the benchmark scores every prompt on test itself)."""
    started = time.monotonic()
    result = promptopt.optimize(
        task, optimizer, model, budget=promptopt.Budget(max_calls=budget), cache=tmp / "cache.sqlite",
        run_dir=tmp / "run", seed=0, evaluate_test=False,
    )  # fmt: skip
    roles = result.usage["by_role"]
    return result, {
        "seconds": round(time.monotonic() - started, 1),
        "calls": {r: roles.get(r, {}).get("calls", 0) for r in ("task", "train")},
        "stop_reason": result.stop_reason,
        "dev": result.best_dev,
        "seed_dev": result.baseline_dev,
    }


def best_soft_checkpoint(run_dir: Path) -> Prompt | None:
    """The soft-prompt checkpoint with the best full-dev score in a run's history."""
    rows = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    soft = [r for r in rows if r["full"] and r["status"] == "complete" and r["prompt"].get("soft_prompt")]
    if not soft:
        return None
    best = max(soft, key=lambda r: (r["summary"]["mean"], -r["trial"]))
    return Prompt.from_dict(best["prompt"])


def cell(result: EvalResult, seed: EvalResult | None = None) -> dict[str, Any]:
    lo, hi = result.ci
    out: dict[str, Any] = {"mean": result.mean, "ci": [lo, hi], "n": result.n, "mode": result.mode}
    if seed is not None:
        out["vs_seed"] = compare(seed, result).to_dict()
    return out


def run_task(name: str, model: Any, budget: int) -> dict[str, Any]:
    from promptopt.models.projection import project_soft_prompt, projected_prompt
    from promptopt.models.soft import trainable_model

    task = small_task(name)
    row: dict[str, Any] = {"task": name, "budget": budget}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        client = ModelClient(model, cache=ResponseCache(root / "test-cache.sqlite"), budget=BudgetTracker())
        test, generate = Evaluator(task, client), Evaluator(task, client, mode="generate")
        seed = test.evaluate(task.seed_prompt(), split="test")
        row["seed"] = cell(seed)
        (root / "gt").mkdir()
        gt, row["gradient_text_run"] = run_optimizer(task, promptopt.load_optimizer("gradient-text"), model, budget,
                                                     root / "gt")  # fmt: skip
        row["gradient_text_run"]["instruction"] = gt.best_prompt.instruction
        row["gradient_text"] = cell(test.evaluate(gt.best_prompt, split="test"), seed)
        generation(row, generate, gt.best_prompt)
        (root / "soft").mkdir()
        soft_opt = promptopt.load_optimizer("soft-prompt", **SOFT_OVERRIDES)
        soft, row["soft_prompt_run"] = run_optimizer(task, soft_opt, model, budget, root / "soft")
        checkpoint = best_soft_checkpoint(root / "soft" / "run")
        if checkpoint is None:
            row["soft_prompt"] = None
            return row
        row["soft_prompt_run"]["kept_by_run"] = soft.best_prompt.soft_prompt is not None
        soft_test = test.evaluate(checkpoint, split="test")
        row["soft_prompt"] = cell(soft_test, seed)
        assert checkpoint.soft_prompt is not None
        projection = project_soft_prompt(trainable_model(model), checkpoint.soft_prompt)
        row["projection"] = {"text": projection.text, "ids": projection.ids, "round_trips": projection.round_trips,
                             "mean_cosine": projection.mean_cosine}  # fmt: skip
        for where in ("system", "instruction"):
            result = test.evaluate(projected_prompt(checkpoint, projection, where=where), split="test")
            row[f"projected_{where}"] = {**cell(result, seed), "vs_soft": compare(soft_test, result).to_dict()}
    return row


def generation(row: dict[str, Any], generate: Evaluator, best: Prompt) -> None:
    """The seed and the gradient_text prompt scored in generation mode (Δ against the seed in that mode)."""
    seed = generate.evaluate(generate.task.seed_prompt(), split="test")
    row["seed_generate"] = cell(seed)
    row["gradient_text_generate"] = cell(generate.evaluate(best, split="test"), seed)


def fill_generation(report: dict[str, Any], model: Any) -> None:
    """Add the generation-mode cells to rows made before they were recorded (fresh cache per task)."""
    for name, row in report["rows"].items():
        if "seed_generate" in row:
            continue
        task = small_task(name)
        if not task.is_classification:  # generation is the task's own mode: the cells are the seed's and the run's
            row["seed_generate"] = row["seed"]
            continue
        with tempfile.TemporaryDirectory() as tmp:
            client = ModelClient(model, cache=ResponseCache(Path(tmp) / "cache.sqlite"), budget=BudgetTracker())
            best = task.seed_prompt().with_instruction(row["gradient_text_run"]["instruction"], origin="gradient_text")
            generation(row, Evaluator(task, client, mode="generate"), best)
        print(name, "generation mode:", row["seed_generate"]["mean"], row["gradient_text_generate"]["mean"], flush=True)


def fmt(c: dict[str, Any] | None, key: str = "vs_seed") -> str:
    if not c:
        return "–"
    return f"{fmt_score(c)} {fmt_delta(c[key])}" if key in c else fmt_score(c)


def markdown(report: dict[str, Any]) -> str:
    p = report["provenance"]
    lines = [
        "# Issue 15, part `gradient`: gradient_text vs seed vs soft prompt vs projected soft prompt",
        "",
        f"`{p['command']}` at commit `{p['commit'][:10]}`{' (uncommitted changes)' if p['dirty'] else ''}, "
        f"{p['started']}, load {p['load_start'][0]} at start, {p['threads']} thread(s). SmolLM2-135M-Instruct, fp32 "
        f"CPU; splits train {SIZES['train']} / dev {SIZES['dev']} / test {SIZES['test']} (seed 0, the same for every "
        f"method); budget {report['budget']} search calls per optimizer run (task model + training examples), one "
        "fresh cache per run; test scored by one evaluator per task. Cell: test mean [95% Wilson CI]; Δ = paired "
        "difference vs the seed prompt [95% Newcombe CI] (**bold**: above 0). gradient_text: preset "
        f"`gradient-text`; soft prompt: preset `soft-prompt` with {SOFT_OVERRIDES}; projected: the best soft-prompt "
        "checkpoint by dev, each virtual token replaced by its nearest allowed vocabulary token (cosine over the "
        "input embeddings), at the start of the system message or before the instruction. `(gen)`: the seed and the "
        "gradient_text prompt scored in generation mode, Δ vs the seed in that mode (for the II tasks generation is "
        "their only mode).",
        "",
        "| task | seed | gradient_text | seed (gen) | gradient_text (gen) | soft prompt | projected → system "
        "| projected → instr. |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, row in report["rows"].items():
        cells = [fmt(row.get(m)) for m in METHODS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## What projection loses against the soft prompt (paired Δ projected − soft, test)", "",
              "| task | soft prompt | projected → system | projected → instr. | mean cosine | round-trips | text |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in report["rows"].items():
        if not row.get("projection"):
            continue
        pr = row["projection"]
        lines.append(
            f"| {name} | {row['soft_prompt']['mean']:.2f} | {fmt(row['projected_system'], 'vs_soft')} | "
            f"{fmt(row['projected_instruction'], 'vs_soft')} | {pr['mean_cosine']:.3f} | {pr['round_trips']} | "
            f"`{json.dumps(pr['text'])[1:-1][:80]}` |"
        )
    lines += ["", "## Runs", "", "| task | method | search calls (task, train) | seconds | stop | prompt |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in report["rows"].items():
        for method in ("gradient_text", "soft_prompt"):
            r = row.get(f"{method}_run")
            if r:
                what = f"`{json.dumps(r['instruction'])[1:-1]}`" if "instruction" in r else ""
                lines.append(f"| {name} | {method} | {r['calls']['task']}, {r['calls']['train']} | {r['seconds']} | "
                             f"{r['stop_reason']} | {what} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", nargs="*", default=list(TASKS))
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--out", type=Path, default=RESULTS / "seed_methods_gradient")
    parser.add_argument("--merge", type=Path, nargs="*", default=[], help="add the rows of other runs' .json files")
    parser.add_argument("--fill-generation", action="store_true", help="only add missing generation-mode cells")
    args = parser.parse_args()
    from promptopt.models.hf import load_smollm2

    model = load_smollm2()
    out = args.out.with_suffix(".json")
    report: dict[str, Any]
    if args.merge or args.fill_generation:  # complete an existing report (its provenance kept, this run's added)
        report = json.loads(out.read_text())
        for other in args.merge:
            part = json.loads(other.read_text())
            report["rows"].update(part["rows"])
            report.setdefault("merged", []).append({"rows": list(part["rows"]), "provenance": part["provenance"]})
        report.setdefault("completed_by", []).append(provenance())
        if args.fill_generation:
            fill_generation(report, model)
        out.write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(markdown(report))
        return
    report = {"provenance": provenance(), "budget": args.budget, "rows": {}}
    for name in args.tasks:
        started = time.monotonic()
        report["rows"][name] = run_task(name, model, args.budget)
        report["rows"][name]["seconds"] = round(time.monotonic() - started, 1)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(markdown(report))
        print(name, {m: round(c["mean"], 3) for m in METHODS if isinstance(c := report["rows"][name].get(m), dict)},
              flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
