"""Zero-shot vs one in-context-learning prompt vs In-Context Sampling (K = 3, 5) on the embedded model.

For each task (sst2, trec, esnli, bbh_sports_understanding) every method scores the first ``--n`` test
examples with SmolLM2-135M-Instruct (float32, CPU, one thread), demos drawn from the train split:

- label scoring (the evaluator's default for classification): zero-shot seed prompt; one ICL prompt with
  ``s`` demos; one ICL prompt holding *all* the demos of ICS K=3 / K=5 (``3s``/``5s`` demos — **same demos**);
  ICS K=3/K=5 × ``s`` demos with random sets, and K=3 with similar and diverse sets (MiniLM embeddings),
  each aggregated by majority vote and by summed label probability (both aggregations reuse one set of calls);
- generation (greedy, parsed by the label set) for the **same number of model calls**: one ICL prompt
  sampled 3 times at temperature 0.7 and voted ("more samples") vs ICS K=3 greedy, voted ("more prompts"),
  plus the single greedy ICL prompt.

Paired bootstrap CIs compare ICS K=3 with the same-demos and same-calls alternatives. Also measured without
the task model: the two embedders' speed and how often a test example's nearest train neighbours carry its
label (k-NN label agreement, a proxy for how useful "similar" demos are). Results:
``benchmarks/results/ics.md`` and ``.json``.

    OMP_NUM_THREADS=1 python benchmarks/bench_ics.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

from provenance import provenance

from promptopt.core.taskfile import load_task
from promptopt.evaluation.evaluator import EvalResult, Evaluator, compare
from promptopt.models import get_model
from promptopt.models.budget import BudgetTracker
from promptopt.models.cache import ResponseCache
from promptopt.models.client import ModelClient
from promptopt.prompts.embeddings import dot, get_embedder
from promptopt.prompts.ics import example_text, make_ics_prompt, render_all

HERE = Path(__file__).resolve().parent
TASKS = ("sst2", "trec", "esnli", "bbh_sports_understanding")


def knn_agreement(task: Any, embedder: Any, n: int, k: int = 5) -> float:
    """Share of test examples whose k nearest train examples' majority label is theirs."""
    pool, queries = list(task.train), list(task.test[:n])
    fitted = embedder.fit([example_text(e) for e in pool])
    pv = fitted.embed([example_text(e) for e in pool])
    hits = 0
    for q, qv in zip(queries, fitted.embed([example_text(q) for q in queries]), strict=True):
        top = sorted(range(len(pool)), key=lambda i: -dot(qv, pv[i]))[:k]
        label = Counter(pool[i].answer for i in top).most_common(1)[0][0]
        hits += label == q.answer
    return hits / len(queries)


def embed_speed(texts: list[str]) -> dict[str, float]:
    out = {}
    for name in ("minilm", "tfidf"):
        emb = get_embedder(name)
        times = []
        for i in range(3):
            batch = [f"{t} #{i}" for t in texts]  # fresh texts: MiniLM memoises
            t0 = time.perf_counter()
            emb.fit(batch).embed(batch)
            times.append(time.perf_counter() - t0)
        out[name] = len(texts) / statistics.median(times)
    return out


def row(name: str, group: str, res: EvalResult, *, demos: int, k: int, tokens: int) -> dict[str, Any]:
    """One table row; ``tokens`` counts the prompt tokens of every sub-prompt (as deployed, without a cache)."""
    lo, hi = res.ci
    return {
        "method": name,
        "group": group,
        "demos_per_prompt": demos,
        "prompts": k,
        "calls_per_example": k,
        "prompt_tokens_per_example": round(tokens / res.n),
        "mean": res.mean,
        "ci": [lo, hi],
        "parse_errors": res.n_parse_errors,
        "api_errors": res.n_api_errors,
    }


def run_task(name: str, model: Any, cache: ResponseCache, n: int, shots: int, seed: int) -> dict[str, Any]:
    task = load_task(name)
    test = task.test[:n]
    base = task.seed_prompt()
    train = task.train
    results: dict[str, EvalResult] = {}
    rows = []

    def ev(label: str, group: str, prompt: Any, mode: str, *, demos: int, k: int) -> None:
        client = ModelClient(model, cache=cache, budget=BudgetTracker(), batch_size=16)
        res = Evaluator(task, client, mode=mode).evaluate(prompt, test, split="test")  # type: ignore[arg-type]
        results[label] = res
        tokens = sum(len(model.encode(m)) for group_ in render_all(prompt, test) for m in group_)
        rows.append(row(label, group, res, demos=demos, k=k, tokens=tokens))
        print(f"  {name:26s} {label:38s} {res.mean:.3f} ({time.strftime('%H:%M:%S')})", flush=True)

    def ics(k: int, strategy: str, agg: str, embedder: str = "minilm", **kw: Any) -> Any:
        return make_ics_prompt(
            base, train, k=k, shots=shots, strategy=strategy, aggregation=agg, seed=seed, embedder=embedder, **kw
        )

    s = shots
    ev("zero-shot seed", "score", base, "score", demos=0, k=1)
    ev(f"ICL {s} demos", "score", ics(1, "random", "vote"), "score", demos=s, k=1)
    for k in (3, 5):
        union = tuple(d for st in ics(k, "random", "vote").ics.demo_sets for d in st)
        ev(f"ICL {k * s} demos (= ICS K={k} demos)", "score", replace(base, demos=union), "score", demos=k * s, k=1)
        for agg in ("vote", "confidence"):
            ev(f"ICS K={k} random, {agg}", "score", ics(k, "random", agg), "score", demos=s, k=k)
    for strategy, emb in (("similar", "minilm"), ("diverse", "minilm")):
        for agg in ("vote", "confidence"):
            ev(f"ICS K=3 {strategy} ({emb}), {agg}", "score", ics(3, strategy, agg, emb), "score", demos=s, k=3)
    ev(f"ICL {s} demos, greedy", "generate", ics(1, "random", "vote"), "generate", demos=s, k=1)
    one_set = ics(1, "random", "vote").demos
    sampled = replace(ics(3, "random", "vote"), ics=replace(ics(3, "random", "vote").ics, demo_sets=(one_set,) * 3))
    sampled = replace(sampled, ics=replace(sampled.ics, temperature=0.7))
    ev(f"ICL {s} demos × 3 samples (T=0.7), vote", "generate", sampled, "generate", demos=s, k=3)
    ev("ICS K=3 random, vote (greedy)", "generate", ics(3, "random", "vote"), "generate", demos=s, k=3)

    def paired(a: str, b: str) -> dict[str, Any]:
        c = compare(results[a], results[b])
        return {"a": a, "b": b, "diff": c.diff, "ci": [c.ci_low, c.ci_high], "p": c.p_value}

    comparisons = [
        paired(f"ICL {3 * s} demos (= ICS K=3 demos)", "ICS K=3 random, vote"),
        paired(f"ICL {3 * s} demos (= ICS K=3 demos)", "ICS K=3 random, confidence"),
        paired(f"ICL {5 * s} demos (= ICS K=5 demos)", "ICS K=5 random, confidence"),
        paired(f"ICL {s} demos", "ICS K=3 random, confidence"),
        paired(f"ICL {s} demos × 3 samples (T=0.7), vote", "ICS K=3 random, vote (greedy)"),
    ]
    knn = {e: knn_agreement(task, get_embedder(e), n) for e in ("minilm", "tfidf")}
    return {"task": name, "n": len(test), "rows": rows, "comparisons": comparisons, "knn_label_agreement": knn}


def render(data: dict[str, Any]) -> str:
    s = data["settings"]
    first = data.get("first_run") or s  # the run that called the model (a re-run answers from the cache)
    lines = [
        "# In-Context Sampling on the embedded model",
        "",
        f"SmolLM2-135M-Instruct (float32, CPU, {s['threads']} thread), first {s['n']} test examples per task, "
        f"{s['shots']} demos per prompt drawn from the train split (seed {s['seed']}). Accuracy with a 95% "
        "bootstrap CI. *score*: label log-likelihood (the evaluator's default for classification); "
        "*generate*: greedy decoding parsed by the label set. Calls and prompt tokens are per test example. "
        "Prompt tokens: the task model's tokens of all sub-prompts of one example, chat template included. "
        f"Script: `benchmarks/bench_ics.py`. Wall time {first['wall_minutes']:.1f} min; load average "
        f"{first['load_before']} before, {first['load_after']} after (2 cores shared with other jobs).",
        "",
    ]
    for t in data["tasks"]:
        lines += [f"## {t['task']} (n={t['n']})", ""]
        lines += [
            "| mode | method | demos/prompt | calls | prompt tokens | accuracy [95% CI] |",
            "|---|---|---|---|---|---|",
        ]
        for r in t["rows"]:
            lo, hi = r["ci"]
            err = f" ({r['parse_errors']} unparsable)" if r["parse_errors"] else ""
            lines.append(
                f"| {r['group']} | {r['method']} | {r['demos_per_prompt']} | {r['calls_per_example']} | "
                f"{r['prompt_tokens_per_example']} | {r['mean']:.3f} [{lo:.3f}–{hi:.3f}]{err} |"
            )
        lines += ["", "Paired differences (B − A, bootstrap 95% CI):", ""]
        for c in t["comparisons"]:
            lines.append(
                f"- {c['b']} − {c['a']}: {c['diff']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}], p={c['p']:.3f}"
            )
        knn = t["knn_label_agreement"]
        lines += ["", f"5-NN label agreement (train → test): MiniLM {knn['minilm']:.2f}, TF-IDF {knn['tfidf']:.2f}", ""]
    sp = data["embedding_speed"]
    lines += [
        "## Embedders",
        "",
        f"Sentences per second on {sp['n']} sst2 train+test sentences (median of 3, 1 thread): "
        f"MiniLM {sp['minilm']:.0f}/s, TF-IDF {sp['tfidf']:.0f}/s.",
        "",
    ]
    if data.get("notes"):
        lines += ["## Notes", "", *data["notes"], ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", nargs="*", default=list(TASKS))
    ap.add_argument("--n", type=int, default=60)
    ap.add_argument("--shots", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache", default=str(HERE / ".cache" / "ics.sqlite"))
    ap.add_argument("--out", default=str(HERE / "results" / "ics"))
    ap.add_argument("--render-only", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    if args.render_only:
        out.with_suffix(".md").write_text(render(json.loads(out.with_suffix(".json").read_text())))
        return
    import torch

    torch.set_num_threads(1)
    load_before = [round(x, 2) for x in os.getloadavg()]
    t0 = time.time()
    model = get_model("smollm2", dtype="float32")
    cache = ResponseCache(args.cache)
    tasks = [run_task(name, model, cache, args.n, args.shots, args.seed) for name in args.tasks]
    sst2 = load_task("sst2")
    texts = [example_text(e) for e in (*sst2.train, *sst2.test[:300])]
    speed = {"n": len(texts), **embed_speed(texts)}
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}
    data = {
        "first_run": previous.get("first_run") or previous.get("settings"),
        "settings": {
            "n": args.n,
            "shots": args.shots,
            "seed": args.seed,
            "threads": torch.get_num_threads(),
            "model": model.name,
            "wall_minutes": (time.time() - t0) / 60,
            "load_before": load_before,
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
            "torch": torch.__version__,
        },
        "tasks": tasks,
        "embedding_speed": speed,
        "notes": previous.get("notes", []),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({**data, "provenance": provenance()}, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(data))


if __name__ == "__main__":
    main()
