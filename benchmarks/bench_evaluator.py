"""Evaluator throughput, side by side in one run: naive loop vs DSPy Evaluate vs promptopt (cold, warm).

Same model (SmolLM2-135M-Instruct, float32, 1 thread), same prompt (the task's seed instruction plus
train demos) and the same test examples for every leg:

- ``sst2`` (classification): promptopt scores the two labels; the naive loop and DSPy generate.
- ``ii_antonyms`` (short generation, max_tokens 16, stop at a newline).

Legs: (a) naive — one ``transformers`` ``generate`` per example, as a user would write it; (b) DSPy 3.4
``Evaluate`` with ``dspy.Predict`` on the same in-process model through ``dspy.LM("local/...", engine=...)``,
run as a subprocess of the separate venv ``/work/venv-dspy`` (``--dspy-python``) on fewer examples;
(c) promptopt's evaluator with an empty cache; (d) the same again with the filled cache (must make 0 calls).
(a) and (c) are interleaved: each of ``--reps`` rounds times the naive loop on its share of the examples and
promptopt cold on all of them, so a change in machine load hits both; ratios are medians over rounds.

Also measured: a large float32 matmul (the CPU's practical peak, GFLOP/s) against the model FLOPs
(~2 x parameters per token) each leg spent, and each leg's peak RSS.

The DSPy venv (kept apart because dspy's litellm pins downgrade huggingface-hub and filelock):

    python -m venv /work/venv-dspy && /work/venv-dspy/bin/pip install torch==2.13.0 dspy==3.4.1 transformers==5.24.0

    python benchmarks/bench_evaluator.py --reps 2 --dspy-n 20   # ~20 min on 2 busy cores (the recorded run)
    python benchmarks/bench_evaluator.py --racing-only --dtype-only   # add the racing and dtype sections
    python benchmarks/bench_evaluator.py --n 40 --dspy-n 6 --reps 1 --out /tmp/quick/evaluator   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"sst2": 8, "ii_antonyms": 5}  # task -> train demos in the prompt
DSPY_MAX_TOKENS = 32  # DSPy's field markers need ~20 tokens around a one-word answer


# -- measurement helpers ---------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled every 10 ms)."""

    def __enter__(self) -> PeakRSS:
        self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def matmul_gflops(torch: Any, n: int = 2048, reps: int = 5) -> float:
    """Median float32 GFLOP/s of an n x n matmul on the current thread setting."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


# -- (a) the naive loop -------------------------------------------------------------------------------------
def naive_loop(hf: Any, task: Any, prompt: Any, examples: list, max_new: int) -> dict[str, Any]:
    """One ``generate`` per example, parsed and scored like the evaluator would."""
    import torch

    model, tok = hf.model, hf.tokenizer
    correct = tokens = 0
    t = time.perf_counter()
    for ex in examples:
        messages = [m.to_dict() for m in prompt.render(ex)]
        inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=max_new, do_sample=False, pad_token_id=tok.eos_token_id)
        text = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        parsed = task.parser(text)
        correct += parsed is not None and task.metric(parsed, ex) == 1.0
        tokens += out.shape[1]
    return {"n": len(examples), "seconds": time.perf_counter() - t, "correct": int(correct), "tokens": tokens}


# -- (c)/(d) promptopt --------------------------------------------------------------------------------------
def promptopt_leg(hf: Any, task: Any, prompt: Any, examples: list, cache: Any) -> dict[str, Any]:
    from promptopt.budget import BudgetTracker
    from promptopt.client import ModelClient
    from promptopt.evaluation import Evaluator

    tracker = BudgetTracker()
    evaluator = Evaluator(task, ModelClient(hf, cache=cache, budget=tracker, batch_size=32))
    t = time.perf_counter()
    result = evaluator.evaluate(prompt, examples, split="test")
    seconds = time.perf_counter() - t
    usage = tracker.total
    return {
        "n": result.n,
        "seconds": seconds,
        "correct": int(sum(result.scores)),
        "calls": result.calls,
        "mode": result.mode,
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
    }


def computed_tokens(hf: Any, prompt: Any, examples: list, completion_tokens: int) -> int:
    """Tokens promptopt actually ran through the model: the shared prefix once, each suffix, each output."""
    from promptopt.models.hf import common_prefix

    ids = [hf.encode(prompt.render(ex)) for ex in examples]
    shared = common_prefix(ids)
    return shared + sum(len(i) - shared for i in ids) + completion_tokens


# -- (b) DSPy, in its own venv -------------------------------------------------------------------------------
def dspy_payload(task: Any, prompt: Any, examples: list, model_dir: Path) -> dict[str, Any]:
    field = next(iter(task.train[0].inputs))
    return {
        "model_dir": str(model_dir),
        "instruction": prompt.instruction,
        "input": field,
        "output": "answer",
        "demos": [{"input": str(d.inputs[field]), "answer": d.answer} for d in prompt.demos],
        "examples": [{"input": str(ex.inputs[field]), "answer": ex.answer} for ex in examples],
    }


def run_dspy(python: str, payload: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "payload.json"
        spec.write_text(json.dumps(payload))
        env = {**os.environ, "DSPY_CACHEDIR": str(Path(tmp) / "dspy_cache"), "OMP_NUM_THREADS": "1"}
        proc = subprocess.run(
            [python, __file__, "--dspy-leg", str(spec)], capture_output=True, text=True, env=env, timeout=3600
        )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-5:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def dspy_leg(spec_file: str) -> None:
    """Runs inside the DSPy venv (no promptopt there): Evaluate a Predict program on the payload."""
    import resource

    import dspy
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from dspy_engine import LocalEngine, load_model

    torch.set_num_threads(1)
    spec = json.loads(Path(spec_file).read_text())
    model, tok = load_model(spec["model_dir"])

    engine = LocalEngine(model, tok, max_tokens=DSPY_MAX_TOKENS)
    lm = dspy.LM("local/smollm2", engine=engine, temperature=0.0, max_tokens=DSPY_MAX_TOKENS)
    dspy.configure(lm=lm)
    signature = dspy.make_signature(f"{spec['input']} -> {spec['output']}", spec["instruction"])
    program = dspy.Predict(signature)

    def example(row: dict[str, str]) -> Any:
        return dspy.Example(**{spec["input"]: row["input"], spec["output"]: row["answer"]}).with_inputs(spec["input"])

    program.demos = [example(d) for d in spec["demos"]]
    devset = [example(e) for e in spec["examples"]]

    def metric(gold: Any, pred: Any, trace: Any = None) -> bool:
        answer = str(getattr(pred, spec["output"], "") or "").strip().lower()
        return answer.split("\n")[0].strip(" .") == gold[spec["output"]].strip().lower()

    evaluate = dspy.Evaluate(devset=devset, metric=metric, num_threads=1, display_progress=False, max_errors=10**6)
    t = time.perf_counter()
    result = evaluate(program)
    seconds = time.perf_counter() - t
    tokens = sum((h.get("usage") or {}).get("total_tokens", 0) or 0 for h in lm.history)
    print(
        json.dumps(
            {
                "n": len(devset),
                "seconds": seconds,
                "correct": round(float(result.score) * len(devset) / 100),
                "calls": len(lm.history),
                "tokens": tokens,
                "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "dspy": dspy.__version__,
            }
        )
    )


# -- the run ---------------------------------------------------------------------------------------------------
def bench_task(name: str, args: argparse.Namespace, hf: Any, params: int, peak: float) -> dict[str, Any]:
    import dataclasses

    from promptopt.cache import ResponseCache
    from promptopt.taskfile import load_task

    task = load_task(ROOT / "tasks" / name)
    prompt = dataclasses.replace(task.seed_prompt(), demos=tuple(task.train[: TASKS[name]]))
    examples = list(task.test[: args.n])
    max_new = task.generation.max_tokens
    rounds = []
    naive_parts, cold = [], []
    for r in range(args.reps):
        part = examples[r * len(examples) // args.reps : (r + 1) * len(examples) // args.reps]
        with PeakRSS() as mem_naive:
            a = naive_loop(hf, task, prompt, part, max_new)
        naive_parts.append(a)
        with tempfile.TemporaryDirectory() as tmp:
            cache = ResponseCache(Path(tmp) / "cache.sqlite")
            hf.clear_prefix_cache()
            with PeakRSS() as mem_cold:
                c = promptopt_leg(hf, task, prompt, examples, cache)
            with PeakRSS() as mem_warm:
                w = promptopt_leg(hf, task, prompt, examples, cache)
            cache.close()
        c["peak_rss"], w["peak_rss"], a["peak_rss"] = mem_cold.peak, mem_warm.peak, mem_naive.peak
        cold.append(c)
        rounds.append({"naive": a, "cold": c, "warm": w, "load": os.getloadavg()})
        print(
            f"  {name} round {r}: naive {a['n'] / a['seconds']:.2f} ex/s, cold {c['n'] / c['seconds']:.2f} ex/s, "
            f"warm {w['n'] / w['seconds']:.0f} ex/s ({w['calls']} calls), load {os.getloadavg()[0]:.2f}",
            flush=True,
        )
    dspy = None
    if args.dspy_python:
        n_dspy = min(args.dspy_n, len(examples))
        dspy = run_dspy(args.dspy_python, dspy_payload(task, prompt, examples[:n_dspy], hf_dir(hf)))
        print(f"  {name} dspy: {dspy}", flush=True)

    def rate(leg: dict[str, Any]) -> float:
        return leg["n"] / leg["seconds"]

    naive_rate = statistics.median(rate(x) for x in naive_parts)
    cold_rate = statistics.median(rate(x) for x in cold)
    naive_tokens = sum(x["tokens"] for x in naive_parts) / sum(x["n"] for x in naive_parts)
    c0 = cold[0]
    effective_tokens = (c0["prompt_tokens"] + c0["completion_tokens"]) / c0["n"]
    ran_tokens = computed_tokens(hf, prompt, examples, c0["completion_tokens"]) / c0["n"]
    warm = [r["warm"] for r in rounds]

    def flops_share(tokens_per_s: float) -> float:
        return 2 * params * tokens_per_s / (peak * 1e9)

    out: dict[str, Any] = {
        "task": name,
        "n": len(examples),
        "demos": TASKS[name],
        "prompt_tokens_per_example": round(c0["prompt_tokens"] / c0["n"], 1),
        "promptopt_mode": c0["mode"],
        "rounds": rounds,
        "naive": {
            "ex_per_s": naive_rate,
            "accuracy": sum(x["correct"] for x in naive_parts) / sum(x["n"] for x in naive_parts),
            "tokens_per_s": naive_tokens * naive_rate,
            "peak_fraction": flops_share(naive_tokens * naive_rate),
            "peak_rss_mb": max(x["peak_rss"] for x in naive_parts) / 2**20,
        },
        "promptopt_cold": {
            "ex_per_s": cold_rate,
            "accuracy": c0["correct"] / c0["n"],
            "calls": c0["calls"],
            "ratio_to_naive": statistics.median(rate(c) / rate(a) for c, a in zip(cold, naive_parts, strict=True)),
            "effective_tokens_per_s": effective_tokens * cold_rate,
            "computed_tokens_per_s": ran_tokens * cold_rate,
            "peak_fraction_computed": flops_share(ran_tokens * cold_rate),
            "peak_rss_mb": max(x["peak_rss"] for x in cold) / 2**20,
        },
        "promptopt_warm": {
            "ex_per_s": statistics.median(rate(x) for x in warm),
            "calls": max(x["calls"] for x in warm),
            "peak_rss_mb": max(x["peak_rss"] for x in warm) / 2**20,
        },
    }
    if dspy is not None and "error" not in dspy:
        d_rate = dspy["n"] / dspy["seconds"]
        out["dspy"] = {
            **dspy,
            "ex_per_s": d_rate,
            "accuracy": dspy["correct"] / dspy["n"],
            "calls_per_example": dspy["calls"] / dspy["n"],
            "tokens_per_s": dspy["tokens"] / dspy["seconds"],
            "peak_fraction": flops_share(dspy["tokens"] / dspy["seconds"]),
            "peak_rss_mb": dspy["peak_rss"] / 2**20,
        }
        out["promptopt_cold"]["ratio_to_dspy"] = cold_rate / d_rate
        out["naive"]["ratio_to_dspy"] = naive_rate / d_rate
    elif dspy is not None:
        out["dspy"] = dspy
    return out


def hf_dir(hf: Any) -> Path:
    return Path(hf.model.name_or_path)


def write_markdown(report: dict[str, Any], path: Path) -> None:
    env = report["environment"]
    lines = [
        "# Evaluator throughput: naive loop vs DSPy Evaluate vs promptopt",
        "",
        f"One run of `benchmarks/bench_evaluator.py` ({env['started']}): SmolLM2-135M-Instruct, float32, "
        f"{env['threads']} thread, {env['cpu']}; load average {env['load_start'][0]:.2f} at start, "
        f"{env['load_end'][0]:.2f} at end. Matmul peak (fp32 {env['matmul_n']}^2, 1 thread): "
        f"**{env['matmul_gflops']:.1f} GFLOP/s**; model FLOPs taken as 2 x {env['params'] / 1e6:.1f} M per token.",
        "",
        "| task | leg | examples | ex/s | x naive | x DSPy | accuracy | model calls | tokens/s | % of matmul peak"
        " | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in report["tasks"]:
        a, c, w, d = t["naive"], t["promptopt_cold"], t["promptopt_warm"], t.get("dspy")
        dspy_ok = d is not None and "ex_per_s" in d

        def x_dspy(v: float, d: dict[str, Any] | None = d, ok: bool = dspy_ok) -> str:
            return f"{v / d['ex_per_s']:.1f}" if ok and d is not None else "n/a"

        lines += [
            f"| {t['task']} | (a) naive `generate` loop | {t['n']} | {a['ex_per_s']:.2f} | 1.0 | "
            f"{x_dspy(a['ex_per_s'])} | {a['accuracy']:.3f} | {t['n']} | {a['tokens_per_s']:.0f} | "
            f"{100 * a['peak_fraction']:.0f}% | {a['peak_rss_mb']:.0f} |",
        ]
        if dspy_ok:
            lines.append(
                f"| {t['task']} | (b) DSPy `Evaluate` | {d['n']} | {d['ex_per_s']:.2f} | "
                f"{d['ex_per_s'] / a['ex_per_s']:.2f} | 1.0 | {d['accuracy']:.3f} | {d['calls']} | "
                f"{d['tokens_per_s']:.0f} | {100 * d['peak_fraction']:.0f}% | {d['peak_rss_mb']:.0f} |"
            )
        elif d is not None:
            lines.append(f"| {t['task']} | (b) DSPy `Evaluate` | failed: {d.get('error')} | | | | | | | | |")
        lines += [
            f"| {t['task']} | (c) promptopt cold ({t['promptopt_mode']}) | {t['n']} | {c['ex_per_s']:.2f} | "
            f"**{c['ratio_to_naive']:.1f}** | **{x_dspy(c['ex_per_s'])}** | {c['accuracy']:.3f} | {c['calls']} | "
            f"{c['computed_tokens_per_s']:.0f} computed ({c['effective_tokens_per_s']:.0f} effective) | "
            f"{100 * c['peak_fraction_computed']:.0f}% | {c['peak_rss_mb']:.0f} |",
            f"| {t['task']} | (d) promptopt warm (cache) | {t['n']} | {w['ex_per_s']:.0f} | "
            f"{w['ex_per_s'] / a['ex_per_s']:.0f} | {x_dspy(w['ex_per_s'])} | same as (c) | **{w['calls']}** | - | - |"
            f" {w['peak_rss_mb']:.0f} |",
        ]
    lines += [
        "",
        f"Ratios are medians over {len(report['tasks'][0]['rounds'])} interleaved rounds (naive on its share of the "
        "examples, then promptopt cold on all of them), so load changes hit both legs. ii_antonyms has 100 test "
        "examples (the whole split). DSPy ran in its own venv as a subprocess on the first "
        "examples only; its ex/s is from that subset. Tokens/s: the naive loop and DSPy count every prompt and "
        "output token they ran; promptopt 'computed' counts the shared prefix once plus each example's own "
        "suffix and output (what it actually ran), 'effective' counts every example's full prompt (the work "
        "a loop without prefix reuse would do). Peak RSS is the process's (model included) during the leg.",
        "",
    ]
    if "racing" in report:
        r = report["racing"]
        lines += [
            f"## Racing ({r['task']} dev, {r['mode']})",
            "",
            "From `--racing-only` (a separate invocation, same machine and model).",
            "",
            f"{r['candidates']} candidate instructions on {r['n']} dev examples, stages {r['stages']}, sign-test "
            f"alpha {r['alpha']}: **{r['evaluations']} evaluations instead of {r['full']} "
            f"({r['saved']} saved, {100 * r['saved'] / r['full']:.0f}%)**, {r['seconds']:.0f} s vs "
            f"{r['full_seconds']:.0f} s for full evaluation of every candidate. Winner by racing: "
            f"{r['race_winner']!r} ({r['race_winner_full']:.3f} on full dev); best on full dev: "
            f"{r['full_winner']!r} ({r['full_winner_score']:.3f}).",
            "",
            "| candidate | full-dev accuracy | race: examples scored | dropped |",
            "|---|---|---|---|",
            *[
                f"| {c['instruction']} | {c['full']:.3f} | {c['scored']} | {'yes' if c['dropped'] else ''} |"
                for c in r["table"]
            ],
            "",
        ]
        if not r["dropped"]:
            lines += [
                "No candidate was significantly worse than the leader on the examples seen (a sign test on the "
                "examples where two candidates differ), so none was dropped: the race cost the same evaluations "
                "in smaller batches. Savings on separable candidates are exercised in tests/unit/test_racing.py.",
                "",
            ]
    if "dtype" in report:
        d = report["dtype"]
        lines += [
            "## CPU dtype: float32 vs bfloat16 (sst2, 8 demos, label scoring)",
            "",
            "From `--dtype-only` (a separate invocation, same machine and model).",
            "",
            f"This CPU has native bf16 matmuls (AVX512-BF16/AMX): **{d['cpu_bf16']}**. {d['n']} test examples; "
            "'packed' is the default path (shared prefix, one pass per batch), 'bs16' runs every prompt whole "
            "in batches of 16, 'bs1' one at a time.",
            "",
            "| | float32 | bfloat16 |",
            "|---|---|---|",
            f"| ex/s, packed | {d['float32']['packed']:.2f} | {d['bfloat16']['packed']:.2f} |",
            f"| ex/s, bs16 without prefix reuse | {d['float32']['bs16']:.2f} | {d['bfloat16']['bs16']:.2f} |",
            f"| max abs log-prob diff, packed vs bs1 | {d['float32']['diff_packed_bs1']:.1e} | "
            f"{d['bfloat16']['diff_packed_bs1']:.2f} |",
            f"| max abs log-prob diff, bs16 vs bs1 | {d['float32']['diff_bs16_bs1']:.1e} | "
            f"{d['bfloat16']['diff_bs16_bs1']:.2f} |",
            f"| label argmax flips, packed vs bs16 | {d['float32']['flips']} | {d['bfloat16']['flips']} |",
            "",
            f"bfloat16 vs float32 (packed): max log-prob diff {d['bf16_vs_fp32_diff']:.2f}, "
            f'{d["bf16_vs_fp32_flips"]} of {d["n"]} label decisions differ. Decision: `dtype="auto"` stays float32 '
            "on CPU (reproducible, batch-independent scores; bf16 is not even faster without native support); "
            '`dtype="fast"` opts in to bf16 where the CPU has AVX512-BF16/AMX, and on GPUs.',
            "",
        ]
    path.write_text("\n".join(lines))


def dtype_leg(n: int = 48) -> dict[str, Any]:
    """float32 vs bfloat16 label scoring on sst2: speed, and how much scores move with the batch path."""
    import dataclasses

    from promptopt.models.base import ScoreRequest
    from promptopt.models.hf import cpu_has_bf16, load_smollm2
    from promptopt.taskfile import load_task

    task = load_task(ROOT / "tasks" / "sst2")
    prompt = dataclasses.replace(task.seed_prompt(), demos=tuple(task.train[:8]))
    requests = [ScoreRequest(messages=prompt.render(ex), continuations=task.labels) for ex in task.test[:n]]
    runs: dict[tuple[str, str], list] = {}
    out: dict[str, Any] = {"cpu_bf16": cpu_has_bf16(), "n": n}
    for dtype in ("float32", "bfloat16"):
        hf = load_smollm2(dtype=dtype)
        hf.score(requests[:4])
        speed: dict[str, float] = {}
        for label, batch_size, min_prefix, subset in (("packed", 32, 16, n), ("bs16", 16, 0, n), ("bs1", 1, 0, n // 2)):
            hf.batch_size, hf.min_prefix = batch_size, min_prefix
            hf.clear_prefix_cache()
            t = time.perf_counter()
            runs[dtype, label] = hf.score(requests[:subset])
            speed[label] = subset / (time.perf_counter() - t)
        out[dtype] = speed
        del hf

    def argmax(rs: list) -> list[int]:
        return [max(range(len(x.logprobs)), key=x.logprobs.__getitem__) for x in rs]

    def diff(a: list, b: list) -> float:
        return max(abs(u - v) for x, y in zip(a, b, strict=True) for u, v in zip(x.logprobs, y.logprobs, strict=True))

    for dtype in ("float32", "bfloat16"):
        packed, bs16, bs1 = (runs[dtype, k] for k in ("packed", "bs16", "bs1"))
        out[dtype]["diff_packed_bs1"] = diff(packed[: len(bs1)], bs1)
        out[dtype]["diff_bs16_bs1"] = diff(bs16[: len(bs1)], bs1)
        out[dtype]["flips"] = sum(a != b for a, b in zip(argmax(packed), argmax(bs16), strict=True))
    fp32, bf16 = runs["float32", "packed"], runs["bfloat16", "packed"]
    out["bf16_vs_fp32_diff"] = diff(fp32, bf16)
    out["bf16_vs_fp32_flips"] = sum(a != b for a, b in zip(argmax(fp32), argmax(bf16), strict=True))
    return out


RACE_TASK = "sst2"
RACE_CANDIDATES = [  # (instruction, demo labels: "" none, "true", "flipped", or one label for all)
    ("Is the sentiment of this movie review positive or negative?", ""),
    ("Is the sentiment of this movie review positive or negative?", "true"),
    ("Is the sentiment of this movie review positive or negative?", "flipped"),
    ("Is the sentiment of this movie review positive or negative?", "negative"),
    ("Classify the review as positive or negative.", "flipped"),
    ("Translate the review into French.", ""),
]
"""Candidates as a demo-selection or instruction search meets them: some demo sets mislabelled."""


def _demos(task: Any, labels: str) -> tuple:
    from promptopt import Example

    if not labels:
        return ()
    flip = {"positive": "negative", "negative": "positive"}
    out = []
    balanced = [ex for ex in task.train if ex.answer == "positive"][:4] + [
        ex for ex in task.train if ex.answer == "negative"
    ][:4]
    for ex in balanced:
        answer = ex.answer if labels == "true" else flip[ex.answer] if labels == "flipped" else labels
        out.append(Example(id=ex.id, inputs=ex.inputs, target=answer))
    return tuple(out)


def racing_leg(hf: Any) -> dict[str, Any]:
    """Race candidate prompts on a dev split, then score all fully, to show what racing saves and keeps."""
    import dataclasses

    from promptopt.budget import BudgetTracker
    from promptopt.client import ModelClient
    from promptopt.evaluation import Evaluator
    from promptopt.racing import race
    from promptopt.taskfile import load_task

    task = load_task(ROOT / "tasks" / RACE_TASK)
    seed = task.seed_prompt()
    candidates = [
        dataclasses.replace(
            seed.with_instruction(text, origin="bench"), demos=_demos(task, labels), meta={"demos": labels}
        )
        for text, labels in RACE_CANDIDATES
    ]
    dev = list(task.dev)
    evaluator = Evaluator(task, ModelClient(hf, cache=None, budget=BudgetTracker()))
    t = time.perf_counter()
    raced = race(evaluator, candidates, dev, first=10, stages=4, alpha=0.05)
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    full = {p.id: evaluator.evaluate(p, dev).mean for p in candidates}
    full_seconds = time.perf_counter() - t
    scored = {pid: sum(r.n for r in results) for pid, results in raced.results.items()}
    survivors = {p.id for p, _ in raced.ranking}
    best = max(candidates, key=lambda p: full[p.id])
    winner = raced.ranking[0][0]
    return {
        **raced.summary,
        "task": RACE_TASK,
        "mode": evaluator.resolved_mode,
        "n": len(dev),
        "alpha": 0.05,
        "full": len(dev) * len(candidates),
        "seconds": seconds,
        "full_seconds": full_seconds,
        "race_winner": winner.instruction,
        "race_winner_full": full[winner.id],
        "full_winner": best.instruction,
        "full_winner_score": full[best.id],
        "table": [
            {
                "instruction": p.instruction + (f" (8 demos, labels: {p.meta['demos']})" if p.demos else " (0-shot)"),
                "full": full[p.id],
                "scored": scored[p.id],
                "dropped": p.id not in survivors,
            }
            for p in candidates
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="test examples per task")
    parser.add_argument("--reps", type=int, default=3, help="interleaved naive/promptopt rounds")
    parser.add_argument("--dspy-n", type=int, default=30, help="examples for the DSPy leg")
    parser.add_argument(
        "--dspy-python", default="/work/venv-dspy/bin/python", help="python of the DSPy venv ('' skips)"
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "evaluator"))
    parser.add_argument("--racing-only", action="store_true", help="add the racing demo to an existing --out run")
    parser.add_argument("--dtype-only", action="store_true", help="add the fp32/bf16 comparison to an --out run")
    parser.add_argument("--dspy-leg", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dspy_leg:
        dspy_leg(args.dspy_leg)
        return
    if args.dspy_python and not Path(args.dspy_python).exists():
        sys.exit(f"no DSPy venv at {args.dspy_python}; create it (see the module docstring) or pass --dspy-python ''")

    import platform

    import torch

    from promptopt.models.hf import load_smollm2

    torch.set_num_threads(1)
    out = Path(args.out)
    if args.racing_only or args.dtype_only:
        report = json.loads(out.with_suffix(".json").read_text())
        if args.racing_only:
            report["racing"] = racing_leg(load_smollm2(dtype="float32"))
        if args.dtype_only:
            report["dtype"] = dtype_leg()
        out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        write_markdown(report, out.with_suffix(".md"))
        print(out.with_suffix(".md").read_text())
        return
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_start = os.getloadavg()
    peak = statistics.median(matmul_gflops(torch) for _ in range(3))
    hf = load_smollm2(dtype="float32")
    params = sum(p.numel() for p in hf.model.parameters())
    print(f"matmul {peak:.1f} GFLOP/s, {params / 1e6:.1f} M params, load {load_start}", flush=True)
    tasks = [bench_task(name, args, hf, params, peak) for name in args.tasks]
    peak_end = statistics.median(matmul_gflops(torch) for _ in range(3))
    report = {
        "environment": {
            "started": started,
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "load_start": load_start,
            "load_end": os.getloadavg(),
            "matmul_n": 2048,
            "matmul_gflops": peak,
            "matmul_gflops_end": peak_end,
            "params": params,
            "dtype": hf.dtype,
        },
        "tasks": tasks,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(report, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
