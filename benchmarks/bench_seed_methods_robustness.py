"""Seed-methods part ``robustness``: how much does each method narrow the rephrasing spread?

On sst2, ii_sentiment and trec (the splits of ``bench_fewshot.py``: train 32 / dev 32 / test 100 from the task's seeded
pool, its ``small_task`` helper), embedded SmolLM2-135M-Instruct as task model and proposer, seed 0, one fresh response
cache per task under ``--work`` (every method of a task shares it and the same test examples; a restarted task reuses
it):

- the evaluation set: ``--paraphrases`` screened equivalent instructions of the seed instruction
  (:func:`promptopt.optimizers.paraphrases.paraphrase_set`: 16 proposer rewrites screened first, rule-based ones to fill
  up); the rule-based paraphrases *not* in it are the robust soft prompt's training instructions, so it is measured
  on instructions it never saw;
- ``seed``: the seed prompt;
- ``soft``: plain prompt tuning (preset ``soft-prompt``, ``--steps`` steps, the last checkpoint);
- ``soft-robust``: the same plus the consistency term (``paraphrases_per_example`` 2, ``consistency`` 1.0) under the
  training instructions — the same steps, so twice the training calls;
- ``structure-search-robust``: ``structure_search`` with ``robust: mean`` over rule-based paraphrases
  (``robust_over: paraphrases``), ``--budget`` calls; when it ends on another instruction its spread is measured over
  that instruction's own screened paraphrases.

Each cell: the test score as written and under every paraphrase (min / median / max, 95% CIs per variant). Writes
``benchmarks/results/seed_methods_robustness.{json,md}``; cells are merged, so a restart skips finished ones, and one
process per task (``--tasks``) may run at the same time::

    OMP_NUM_THREADS=1 python benchmarks/bench_seed_methods_robustness.py
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from bench_fewshot import RESULTS, small_task
from provenance import provenance

from promptopt.models.cache import promptopt_home

TASKS = ("sst2", "ii_sentiment", "trec")
METHODS = ("seed", "soft", "soft-robust", "structure-search-robust")
JSON = RESULTS / "seed_methods_robustness.json"


def clients(model: Any, cache: Path) -> tuple[Any, Any, Any]:
    """A task client, a proposer (SmolLM2 itself) and their shared tracker, on one cache file."""
    from promptopt.models.budget import BudgetTracker
    from promptopt.models.cache import open_cache
    from promptopt.models.client import ModelClient
    from promptopt.optimizers.proposer import Proposer

    tracker, store = BudgetTracker(), open_cache(cache)
    task_client = ModelClient(model, cache=store, budget=tracker)
    writer = Proposer(ModelClient(model, cache=store, budget=tracker, role="proposer"), temperature=0.9, max_tokens=96)
    return task_client, writer, tracker


def paraphrases(task: Any, prompt: Any, writer: Any, n: int) -> Any:
    from promptopt.optimizers.paraphrases import paraphrase_set

    return paraphrase_set(prompt, n, labels=task.labels or (), proposer=writer, n_proposals=16, seed=0)


def spread(task: Any, client: Any, prompt: Any, found: Any) -> dict[str, Any]:
    from promptopt.evaluation.evaluator import Evaluator
    from promptopt.evaluation.rephrasing import rephrasing_spread

    pairs = [(p.source, p.text) for p in found.paraphrases]
    result = rephrasing_spread(Evaluator(task, client), prompt, pairs, split="test", rejected=found.rejected)
    return {**result.summary(), "proposed": found.proposed}


def soft(
    model: Any, task: Any, work: Path, steps: int, robust: tuple[str, ...], cache: Path
) -> tuple[Any, dict[str, Any]]:
    """A soft prompt trained ``steps`` steps (robust when given training instructions); the seed prompt with its last
    checkpoint, and the run's spend."""
    import dataclasses

    import promptopt

    extra = {"train_instructions": list(robust), "paraphrases_per_example": 2, "consistency": 1.0} if robust else {}
    opt = promptopt.load_optimizer("soft-prompt", max_steps=steps, eval_every=steps, patience=0, **extra)
    started = time.monotonic()
    result = promptopt.optimize(task, opt, model, run_dir=work, cache=cache, evaluate_test=False)
    last = sorted((work / "soft_prompt").glob("step-*"))[-1]
    roles = result.usage["by_role"]
    spend = {
        "train_calls": roles.get("train", {}).get("calls", 0),
        "seconds": round(time.monotonic() - started, 1),
        "checkpoint": last.name,
        "notes": list(result.notes),
    }
    return dataclasses.replace(task.seed_prompt(), soft_prompt=str(last)), spend


def structure_search(model: Any, task: Any, work: Path, budget: int, cache: Path) -> tuple[Any, dict[str, Any]]:
    import promptopt

    opt = promptopt.load_optimizer("structure-search-robust", robust_over="paraphrases")
    started = time.monotonic()
    result = promptopt.optimize(
        task, opt, model, budget=promptopt.Budget(max_calls=budget), run_dir=work, cache=cache, evaluate_test=False
    )
    roles = result.usage["by_role"]
    spend = {
        "calls": sum(roles.get(r, {}).get("calls", 0) for r in ("task", "proposer")),
        "seconds": round(time.monotonic() - started, 1),
        "stop_reason": result.stop_reason,
        "dev": result.best_dev,
    }
    return result.best_prompt, spend


def cell(model: Any, name: str, method: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    task = small_task(name)
    client, writer, tracker = clients(model, work / "cache.sqlite")
    seed_prompt = task.seed_prompt()
    found = paraphrases(task, seed_prompt, writer, args.paraphrases)
    rules_left = [t for _, t in rule_set(task) if t not in found.texts][: args.train_paraphrases]
    spend: dict[str, Any] = {}
    prompt = seed_prompt
    if method in ("soft", "soft-robust"):
        robust = tuple(rules_left) if method == "soft-robust" else ()
        prompt, spend = soft(model, task, work / method, args.steps, robust, work / "cache.sqlite")
        spend["train_instructions"] = rules_left if method == "soft-robust" else []
    elif method == "structure-search-robust":
        prompt, spend = structure_search(model, task, work / method, args.budget, work / "cache.sqlite")
        if prompt.instruction != seed_prompt.instruction:
            found = paraphrases(task, prompt, writer, args.paraphrases)
        spend["instruction"] = prompt.instruction
        spend["n_demos"] = len(prompt.demos)
    started = time.monotonic()
    out = spread(task, client, prompt, found)
    return {**out, **spend, "eval_seconds": round(time.monotonic() - started, 1), "eval_calls": tracker.total.calls}


def rule_set(task: Any) -> list[tuple[str, str]]:
    from promptopt.prompts.paraphrase import rule_paraphrases

    return rule_paraphrases(task.instruction, labels=task.labels or ())


def save(report: dict[str, Any], tasks: list[str]) -> None:
    """Write ``report``'s cells of ``tasks`` into the results file, keeping the other cells there (several processes
    may run at the same time on different cells)."""
    RESULTS.mkdir(exist_ok=True)
    on_disk = json.loads(JSON.read_text()) if JSON.is_file() else {"rows": {}}
    rows = on_disk["rows"]
    for t in tasks:
        rows[t] = {**rows.get(t, {}), **report["rows"].get(t, {})}
    report = {**report, "rows": rows}
    tmp = JSON.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(JSON)
    JSON.with_suffix(".md").write_text(markdown(report))


def _interval(c: dict[str, Any]) -> str:
    return f"{c['min']:.2f} / {c['median']:.2f} / {c['max']:.2f}"


def markdown(report: dict[str, Any]) -> str:
    p = report["provenance"]
    lines = [
        "# Rephrasing robustness: seed prompt vs soft prompt vs robust soft prompt vs the robust objective",
        "",
        f"`{p['command']}` at commit `{p['commit'][:10]}`{' (uncommitted changes)' if p['dirty'] else ''}, "
        f"{p['started']}, load {p['load_start'][0]} at start, OMP_NUM_THREADS={p['threads']}. SmolLM2-135M-Instruct "
        "(fp32 CPU) as task model and proposer; train 32 / dev 32 / test 100 (the `bench_fewshot.py` splits), seed 0, "
        f"a fresh cache per task. {report['paraphrases']} screened paraphrases of the instruction; soft prompts "
        f"{report['steps']} steps (the last checkpoint); structure_search {report['budget']} calls. Cell: test score "
        "min / median / max over the prompt as written and its paraphrases; spread = max − min.",
        "",
        "| task | method | as written | min / median / max | spread | train / search calls |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in report["rows"].items():
        for m in METHODS:
            if c := row.get(m):
                calls = c.get("train_calls", c.get("calls", "–"))
                lines.append(f"| {name} | {m} | {c['original']:.2f} | {_interval(c)} | {c['spread']:.2f} | {calls} |")
    lines += [
        "",
        "Spread, robust soft prompt vs plain soft prompt vs seed prompt (same paraphrases, same test examples):",
        "",
    ]
    for name, row in report["rows"].items():
        if all(m in row for m in ("seed", "soft", "soft-robust")):
            r, p_, s_ = row["soft-robust"]["spread"], row["soft"]["spread"], row["seed"]["spread"]
            lines.append(f"- {name}: {r:.2f} vs {p_:.2f} vs {s_:.2f} (robust − plain {r - p_:+.2f})")
        if c := row.get("soft-robust"):
            lines.append(f"  - robust soft prompt trained under: {c['train_instructions']}")
        if c := row.get("structure-search-robust"):
            lines.append(
                f"  - structure_search's prompt: {c['instruction']!r}, {c['n_demos']} demos; {c['stop_reason']}"
            )
    lines += ["", "Paraphrases (sources; rejected by screening):", ""]
    for name, row in report["rows"].items():
        if c := row.get("seed"):
            rejected = ", ".join(f"{k} {v}" for k, v in sorted(c["rejected"].items())) or "none"
            lines.append(f"- {name}: {', '.join(v['source'] for v in c['paraphrases'][1:])}; rejected: {rejected}")
            for v in c["paraphrases"]:
                lines.append(f"  - {v['mean']:.2f} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}] {v['instruction']!r}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--paraphrases", type=int, default=8, help="screened paraphrases in the evaluation set")
    parser.add_argument("--train-paraphrases", type=int, default=4, help="robust soft prompt's training instructions")
    parser.add_argument("--steps", type=int, default=12, help="soft prompt training steps")
    parser.add_argument("--budget", type=int, default=300, help="structure_search calls")
    parser.add_argument("--work", type=Path, default=promptopt_home() / "bench" / "seed_methods_robustness")
    parser.add_argument("--rerun", action="store_true")
    parser.add_argument("--report", action="store_true", help="only rewrite the .md from the .json")
    args = parser.parse_args()
    report = json.loads(JSON.read_text()) if JSON.is_file() else {"rows": {}}
    if args.report:
        save(report, [])
        return
    from promptopt.models import get_model

    model = get_model("smollm2")
    report.update(provenance=provenance(), paraphrases=args.paraphrases, steps=args.steps, budget=args.budget)
    for name in args.tasks.split(","):
        work = args.work / name  # one cache per task, shared by its methods; fresh unless the task was started
        if not report["rows"].get(name) or args.rerun:
            shutil.rmtree(work, ignore_errors=True)
        for method in args.methods.split(","):
            if method in report["rows"].get(name, {}) and not args.rerun:
                continue
            shutil.rmtree(work / method, ignore_errors=True)  # an interrupted run of this method
            load = [round(x, 2) for x in os.getloadavg()]
            c = cell(model, name, method, args, work)
            report["rows"].setdefault(name, {})[method] = {**c, "load_start": load}
            save(report, [name])
            print(f"{name} {method}: {_interval(c)} (spread {c['spread']:.2f})", flush=True)


if __name__ == "__main__":
    main()
