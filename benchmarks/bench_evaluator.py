"""Evaluator throughput, like with like: the same examples, prompt and model for every leg, interleaved in rounds.

Model: SmolLM2-135M-Instruct, float32, 1 thread. Prompt: the task's seed instruction plus its first train demos
(8 for sst2, 5 for ii_antonyms); examples: the first ``--n`` test examples, cut into ``--rounds`` chunks.

Generation vs generation (every task):

- ``naive_generate``: one ``transformers`` ``generate`` per example, as a user would write it (greedy, the task's
  ``max_tokens`` and stop strings), parsed and scored with the task's parser and metric;
- ``promptopt_generate``: promptopt's ``Evaluator(mode="generate")`` on the same requests, empty cache;
- ``dspy``: DSPy 3.4 ``Evaluate`` of ``dspy.Predict`` (same instruction, demos and examples, in DSPy's own
  ChatAdapter format, up to ``DSPY_MAX_TOKENS`` new tokens for its field markers) on the same model, run in a
  long-lived subprocess of the DSPy venv (``--dspy-python``) that loads the model once and evaluates the chunks
  it is sent; its raw answers are scored here with the task's parser and metric.

Label scoring vs label scoring (tasks with labels):

- ``naive_score``: one forward pass per example and label over the full prompt plus the label, summing the
  label tokens' log-probabilities, no prefix reuse; the best label is the prediction;
- ``promptopt_score``: ``Evaluator(mode="score")`` with an empty cache and no kept prefix KV (cold).

Each round runs every leg on the round's chunk (the order rotates by one leg per round), so a change in machine
load hits all legs; speed ratios are per-round ratios, reported as the median (and range) over rounds. Every
promptopt leg is followed by the same evaluation on its filled cache (warm: must make 0 model calls). Each leg
runs once on two train examples first (not timed), so no lazy initialisation is timed. The racing and dtype
sections come from separate invocations (``--racing-only``, ``--dtype-only``) and keep their own provenance.

The DSPy venv (kept apart because dspy's litellm pins downgrade huggingface-hub and filelock):

    python -m venv /work/venv-dspy && /work/venv-dspy/bin/pip install torch==2.13.0 dspy==3.4.1 transformers==5.24.0

    OMP_NUM_THREADS=1 python benchmarks/bench_evaluator.py                # 80 examples/task, 4 rounds (~20 min)
    OMP_NUM_THREADS=1 python benchmarks/bench_evaluator.py --racing-only  # re-make the racing section (~3 min)
    python benchmarks/bench_evaluator.py --n 8 --rounds 2 --out /tmp/quick/evaluator   # smoke run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any, TypeVar

from dspy_engine import DSPY_MAX_TOKENS
from provenance import provenance

ROOT = Path(__file__).resolve().parents[1]
TASKS = {"sst2": 8, "ii_antonyms": 5}  # task -> train demos in the prompt
GENERATE_LEGS = ("naive_generate", "promptopt_generate", "dspy")
SCORE_LEGS = ("naive_score", "promptopt_score")
T = TypeVar("T")


# -- pure helpers --------------------------------------------------------------------------------------------
def chunks(items: Sequence[T], rounds: int) -> list[list[T]]:
    """``items`` cut into ``rounds`` consecutive chunks of (nearly) equal size."""
    return [list(items[r * len(items) // rounds : (r + 1) * len(items) // rounds]) for r in range(rounds)]


def rotated(legs: Sequence[str], r: int) -> list[str]:
    """The leg order of round ``r``: rotated by one per round, so no leg always runs first."""
    k = r % len(legs) if legs else 0
    return [*legs[k:], *legs[:k]]


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """``text`` up to the first stop string (what an API returns for ``stop=``)."""
    cuts = [i for i in (text.find(s) for s in stop if s) if i >= 0]
    return text[: min(cuts)] if cuts else text


def run_tokens(ids: Sequence[Sequence[int]], extra: int) -> int:
    """Tokens a shared-prefix evaluation runs: the common prefix once, each request's own suffix, plus ``extra``."""
    if not ids:
        return extra
    shared = min(len(x) for x in ids)
    for x in ids[1:]:
        shared = next((i for i in range(shared) if x[i] != ids[0][i]), shared)
    return shared + sum(len(x) - shared for x in ids) + extra


def ratio_stats(rounds: Sequence[dict[str, Any]], leg: str, ref: str) -> dict[str, Any]:
    """Speed of ``leg`` over ``ref`` in each round (same chunk, so seconds_ref / seconds_leg): median and range."""
    per_round = [r["legs"][ref]["seconds"] / r["legs"][leg]["seconds"] for r in rounds]
    return {"median": statistics.median(per_round), "min": min(per_round), "max": max(per_round), "rounds": per_round}


def agreement(a: dict[str, Any], b: dict[str, Any], field: str) -> dict[str, int]:
    """How many examples (ids in both) have the same ``field`` in per-example records ``a`` and ``b``."""
    common = [k for k in a if k in b]
    return {"same": sum(a[k][field] == b[k][field] for k in common), "n": len(common)}


# -- the legs ------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Bench:
    """One task's setup, shared by its legs."""

    hf: Any
    task: Any
    prompt: Any
    dspy: DSPyWorker | None

    def chat(self, ex: Any) -> list[dict[str, str]]:
        return [m.to_dict() for m in self.prompt.render(ex)]

    def record(self, ex: Any, raw: str | None, **extra: Any) -> dict[str, Any]:
        """Per-example record: the raw output, the task parser's prediction and the metric's score."""
        parsed = self.task.parser(raw) if raw is not None else None
        score = self.task.metric(parsed, ex) if parsed is not None else 0.0
        return {"output": raw, "prediction": parsed, "score": score, **extra}


def same_tokens(b: Bench, ex: Any) -> bool:
    """Whether both naive loops feed the model exactly the token ids promptopt renders for ``ex``."""
    tok, ids = b.hf.tokenizer, b.hf.encode(b.prompt.render(ex))
    inputs = tok.apply_chat_template(b.chat(ex), add_generation_prompt=True, return_tensors="pt", return_dict=True)
    text = tok.apply_chat_template(b.chat(ex), tokenize=False, add_generation_prompt=True)
    return inputs["input_ids"][0].tolist() == ids == tok(text, add_special_tokens=False)["input_ids"]


def naive_generate(b: Bench, chunk: list) -> dict[str, Any]:
    """One greedy ``generate`` per example with the task's max_tokens and stop strings."""
    import torch

    model, tok, gen = b.hf.model, b.hf.tokenizer, b.task.generation
    records, tokens = {}, 0
    t = time.perf_counter()
    for ex in chunk:
        inputs = tok.apply_chat_template(b.chat(ex), add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.inference_mode():
            out = model.generate(
                **inputs,
                max_new_tokens=gen.max_tokens,
                do_sample=False,
                stop_strings=list(gen.stop) or None,
                tokenizer=tok,
                pad_token_id=tok.eos_token_id,
            )
        text = tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        records[ex.id] = b.record(ex, cut_at_stop(text, gen.stop))
        tokens += out.shape[1]
    return {"n": len(chunk), "seconds": time.perf_counter() - t, "calls": len(chunk), "tokens": tokens, "ex": records}


def naive_score(b: Bench, chunk: list) -> dict[str, Any]:
    """One forward pass per example and label over the whole prompt + label; the label tokens' log-likelihood."""
    import torch

    model, tok, labels = b.hf.model, b.hf.tokenizer, b.task.labels
    records, tokens = {}, 0
    t = time.perf_counter()
    for ex in chunk:
        text = tok.apply_chat_template(b.chat(ex), tokenize=False, add_generation_prompt=True)
        n = len(tok(text, add_special_tokens=False)["input_ids"])
        logprobs = []
        for label in labels:
            ids = tok(text + label, add_special_tokens=False, return_tensors="pt")["input_ids"]
            with torch.inference_mode():
                logits = model(ids).logits[0, n - 1 : -1]
            logprobs.append(float(logits.log_softmax(-1).gather(-1, ids[0, n:, None]).sum()))
            tokens += ids.shape[1]
        best = labels[max(range(len(labels)), key=logprobs.__getitem__)]
        records[ex.id] = b.record(ex, best, logprobs=logprobs)
    calls = len(chunk) * len(labels)
    return {"n": len(chunk), "seconds": time.perf_counter() - t, "calls": calls, "tokens": tokens, "ex": records}


def promptopt_leg(b: Bench, chunk: list, mode: str) -> dict[str, Any]:
    """promptopt's evaluator in ``mode``, cold (empty cache, no kept prefix KV), then warm on the filled cache."""
    from promptopt.evaluation.evaluator import Evaluator
    from promptopt.models.budget import BudgetTracker
    from promptopt.models.cache import ResponseCache
    from promptopt.models.client import ModelClient

    with tempfile.TemporaryDirectory() as tmp:
        cache = ResponseCache(Path(tmp) / "cache.sqlite")
        tracker = BudgetTracker()
        evaluator = Evaluator(b.task, ModelClient(b.hf, cache=cache, budget=tracker, batch_size=32), mode=mode)
        b.hf.clear_prefix_cache()
        t = time.perf_counter()
        cold = evaluator.evaluate(b.prompt, chunk, split="test")
        seconds = time.perf_counter() - t
        completion_tokens = tracker.total.completion_tokens
        t = time.perf_counter()
        warm = evaluator.evaluate(b.prompt, chunk, split="test")
        warm_seconds = time.perf_counter() - t
        cache.close()
    assert cold.mode == mode, cold.mode
    ids = [b.hf.encode(b.prompt.render(ex)) for ex in chunk]
    if mode == "score":  # packed scoring runs each label's tokens but the first (read from the prompt's logits)
        extra = len(chunk) * sum(
            len(b.hf.tokenizer(x, add_special_tokens=False)["input_ids"]) - 1 for x in b.task.labels
        )
    else:
        extra = completion_tokens
    records = {
        r.example_id: {
            "output": r.raw if r.error_kind != "api" else None,
            "prediction": r.prediction,
            "score": r.score,
            **({"logprobs": list(r.label_logprobs)} if r.label_logprobs is not None else {}),
        }
        for r in cold.records
    }
    return {
        "n": cold.n,
        "seconds": seconds,
        "calls": cold.calls,
        "tokens": run_tokens(ids, extra),
        "warm": {"seconds": warm_seconds, "calls": warm.calls},
        "ex": records,
    }


def dspy_leg(b: Bench, chunk: list) -> dict[str, Any]:
    """DSPy ``Evaluate`` on the chunk in the DSPy worker; its raw answers scored with the task's parser/metric."""
    assert b.dspy is not None
    field = next(iter(b.task.train[0].inputs))
    reply = b.dspy.evaluate(
        {
            "instruction": b.prompt.instruction,
            "input": field,
            "demos": [{"input": str(d.inputs[field]), "answer": d.answer} for d in b.prompt.demos],
            "examples": [{"input": str(ex.inputs[field]), "answer": ex.answer} for ex in chunk],
        }
    )
    records = {ex.id: b.record(ex, raw) for ex, raw in zip(chunk, reply.pop("answers"), strict=True)}
    return {"n": len(chunk), **reply, "ex": records}


class DSPyWorker:
    """A long-lived subprocess of the DSPy venv: loads the model once, then evaluates each chunk it is sent."""

    def __init__(self, python: str, model_dir: Path, tmp: Path) -> None:
        self.log_path = tmp / "dspy_worker.log"
        self._log = self.log_path.open("w")
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "DSPY_CACHEDIR": str(tmp / "dspy_cache"),  # fresh: nothing served from an earlier run
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no network attempt at litellm import
        }
        self.proc = subprocess.Popen(
            [python, __file__, "--dspy-worker", str(model_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            env=env,
        )
        self.info = self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log_path.read_text().strip().splitlines()[-8:]
            raise RuntimeError("DSPy worker died:\n" + "\n".join(tail))
        return json.loads(line)

    def evaluate(self, payload: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(payload) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        self._log.close()


def dspy_worker(model_dir: str) -> None:
    """Runs in the DSPy venv (no promptopt there): answers one JSON line per chunk read from stdin."""
    protocol: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else printed (by DSPy, litellm, transformers) goes to the log
    import logging
    import resource

    import dspy
    import torch
    import transformers
    from dspy_engine import LocalEngine, load_model  # the DSPy venv's engine (dspy imports inside)

    torch.set_num_threads(1)
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)  # "response was truncated" on capped calls
    model, tok = load_model(model_dir)
    engine = LocalEngine(model, tok, max_tokens=DSPY_MAX_TOKENS)
    dspy.configure(lm=dspy.LM("local/smollm2", engine=engine, temperature=0.0, max_tokens=DSPY_MAX_TOKENS))
    versions = {"dspy": dspy.__version__, "torch": torch.__version__, "transformers": transformers.__version__}
    protocol.write(json.dumps({"versions": versions}) + "\n")

    def normalise(text: Any) -> str:
        return str(text or "").strip().split("\n")[0].strip().rstrip(".").strip().lower()

    def metric(gold: Any, pred: Any, trace: Any = None) -> bool:
        return normalise(getattr(pred, "answer", None)) == normalise(gold.answer)

    for line in sys.stdin:
        spec = json.loads(line)
        field = spec["input"]
        program = dspy.Predict(dspy.make_signature(f"{field} -> answer", spec["instruction"]))

        def example(row: dict[str, str], field: str = field) -> Any:
            return dspy.Example(**{field: row["input"], "answer": row["answer"]}).with_inputs(field)

        program.demos = [example(d) for d in spec["demos"]]
        devset = [example(e) for e in spec["examples"]]
        evaluate = dspy.Evaluate(devset=devset, metric=metric, num_threads=1, display_progress=False, max_errors=10**6)
        before = engine.counters()
        t = time.perf_counter()
        result = evaluate(program)
        seconds = time.perf_counter() - t
        after = engine.counters()
        answers = [getattr(pred, "answer", None) for _, pred, _ in result.results]
        reply = {
            "seconds": seconds,
            "calls": after["calls"] - before["calls"],
            "tokens": sum(after[k] - before[k] for k in ("input_tokens", "output_tokens")),
            "answers": [None if a is None else str(a) for a in answers],
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        protocol.write(json.dumps(reply) + "\n")


# -- one task ------------------------------------------------------------------------------------------------
def bench_task(name: str, args: argparse.Namespace, hf: Any, worker: DSPyWorker | None) -> dict[str, Any]:
    """All legs of one task in interleaved rounds; per-round timings and per-example records."""
    from promptopt.core.taskfile import load_task

    task = load_task(ROOT / "tasks" / name)
    prompt = dataclasses.replace(task.seed_prompt(), demos=tuple(task.train[: TASKS[name]]))
    examples = list(task.test[: args.n])
    b = Bench(hf, task, prompt, worker)
    legs: dict[str, Callable[[Bench, list], dict[str, Any]]] = {
        "naive_generate": naive_generate,
        "promptopt_generate": lambda b, c: promptopt_leg(b, c, "generate"),
    }
    if worker is not None:
        legs["dspy"] = dspy_leg
    if task.labels:
        legs["naive_score"] = naive_score
        legs["promptopt_score"] = lambda b, c: promptopt_leg(b, c, "score")
    same_prompt = all(same_tokens(b, ex) for ex in examples)
    for leg in legs.values():  # untimed warm-up on train examples outside the demos
        leg(b, list(task.train[-2:]))
    rounds: list[dict[str, Any]] = []
    records: dict[str, dict[str, Any]] = {k: {} for k in legs}
    for r, chunk in enumerate(chunks(examples, args.rounds)):
        load = os.getloadavg()[0]
        order = rotated(list(legs), r)
        results = {key: legs[key](b, chunk) for key in order}
        for key, res in results.items():
            records[key].update(res.pop("ex"))
        rounds.append(
            {"round": r, "n": len(chunk), "order": order, "load": [load, os.getloadavg()[0]], "legs": results}
        )
        speeds = ", ".join(f"{k} {v['n'] / v['seconds']:.2f}" for k, v in results.items())
        print(f"  {name} round {r}: {speeds} ex/s; load {load:.2f}", flush=True)
    return {
        "task": name,
        "n": len(examples),
        "demos": TASKS[name],
        "max_tokens": task.generation.max_tokens,
        "stop": list(task.generation.stop),
        "labels": list(task.labels or ()),
        "same_prompt_tokens": same_prompt,
        "rounds": rounds,
        "examples": records,
    }


def summarize(t: dict[str, Any], params: int, peak: float) -> dict[str, Any]:
    """Per-leg speed (median over rounds), accuracy, calls, tokens; like-with-like ratios and agreement."""
    rounds, records = t["rounds"], t["examples"]

    def leg(key: str) -> dict[str, Any]:
        runs = [r["legs"][key] for r in rounds]
        n = sum(x["n"] for x in runs)
        ex_per_s = statistics.median(x["n"] / x["seconds"] for x in runs)
        tokens = sum(x["tokens"] for x in runs) / n
        out = {
            "n": n,
            "ex_per_s": ex_per_s,
            "accuracy": sum(x["score"] for x in records[key].values()) / n,
            "unparsed": sum(x["prediction"] is None for x in records[key].values()),
            "calls": sum(x["calls"] for x in runs),
            "tokens_per_example": tokens,
            "tokens_per_s": tokens * ex_per_s,
            "peak_fraction": 2 * params * tokens * ex_per_s / (peak * 1e9),
        }
        if "warm" in runs[0]:
            out["warm"] = {
                "ex_per_s": statistics.median(x["n"] / x["warm"]["seconds"] for x in runs),
                "calls": sum(x["warm"]["calls"] for x in runs),
            }
        return out

    keys = list(rounds[0]["legs"])
    out: dict[str, Any] = {"legs": {k: leg(k) for k in keys}, "ratios": {}}
    pairs = [("promptopt_generate", "naive_generate"), ("promptopt_generate", "dspy"), ("naive_generate", "dspy")]
    pairs += [("promptopt_score", "naive_score")]
    for a, b in pairs:
        if a in keys and b in keys:
            out["ratios"][f"{a}/{b}"] = ratio_stats(rounds, a, b)
    out["generation_agreement"] = {
        "output": agreement(records["naive_generate"], records["promptopt_generate"], "output"),
        "prediction": agreement(records["naive_generate"], records["promptopt_generate"], "prediction"),
    }
    if "naive_score" in keys:
        naive, po = records["naive_score"], records["promptopt_score"]
        out["label_agreement"] = agreement(naive, po, "prediction")
        out["max_logprob_diff"] = max(
            abs(u - v) for k in naive for u, v in zip(naive[k]["logprobs"], po[k]["logprobs"], strict=True)
        )
    return out


# -- the report ----------------------------------------------------------------------------------------------
LEG_NAMES = {
    "naive_generate": "naive `generate` loop",
    "promptopt_generate": "promptopt, generate mode (cold)",
    "dspy": "DSPy `Evaluate` (`Predict`)",
    "naive_score": "naive label-scoring loop",
    "promptopt_score": "promptopt, score mode (cold)",
}


def provenance_line(p: dict[str, Any]) -> str:
    """One sentence naming the run that made a section: command, commit, time, load."""
    if "commit" not in p:
        return p.get("note", "provenance not recorded")
    dirty = " (uncommitted changes)" if p["dirty"] else ""
    end = f", {p['load_end'][0]} at end" if "load_end" in p else ""
    return (
        f"`{p['command']}` at commit `{p['commit'][:10]}`{dirty}, {p['started']}, OMP_NUM_THREADS={p['threads']}, "
        f"load average {p['load_start'][0]} at start{end}"
    )


def fmt_ratio(r: dict[str, Any] | None, bold: bool = False) -> str:
    if r is None:
        return "n/a"
    m = f"**{r['median']:.1f}**" if bold else f"{r['median']:.2f}"
    return f"{m} [{r['min']:.2f}–{r['max']:.2f}]"


def leg_row(task: str, key: str, s: dict[str, Any], ratios: list[str]) -> str:
    cells = [task, LEG_NAMES[key], str(s["n"]), f"{s['ex_per_s']:.2f}", *ratios]
    cells += [f"{s['accuracy']:.3f}", str(s["unparsed"]), str(s["calls"]), f"{s['tokens_per_example']:.0f}"]
    cells.append(f"{s['tokens_per_s']:.0f} ({100 * s['peak_fraction']:.0f}%)")
    return "| " + " | ".join(cells) + " |"


def write_markdown(report: dict[str, Any], path: Path) -> None:
    p, env = report["provenance"], report["environment"]
    loads = [x for t in report["tasks"] for r in t["rounds"] for x in r["load"]]
    n_rounds = len(report["tasks"][0]["rounds"])
    dspy = env.get("dspy_worker")
    lines = [
        "# Evaluator throughput, like with like: naive loops vs promptopt vs DSPy `Evaluate`",
        "",
        f"Main run: {provenance_line(p)}; 1-min load {min(loads):.2f}–{max(loads):.2f} during the rounds, on "
        f"{env['cores']} cores shared with other jobs. SmolLM2-135M-Instruct ({env['params'] / 1e6:.1f} M "
        f"parameters), {env['dtype']}, 1 torch thread, {env['cpu']}; torch {p['versions'].get('torch')}, "
        f"transformers {p['versions'].get('transformers')}"
        + (f"; DSPy {dspy['dspy']} (its own venv, torch {dspy['torch']})" if dspy else "")
        + f". Matmul peak (fp32 2048², 1 thread): {env['matmul_gflops']:.1f} GFLOP/s at start, "
        f"{env['matmul_gflops_end']:.1f} at end.",
        "",
        f"Every leg ran the same examples (each task's first test examples, in {n_rounds} rounds of equal chunks), "
        "the same prompt (the seed instruction + the first train demos; the naive loops feed the model exactly the "
        "token ids promptopt renders) and the same model; each round ran every leg on its chunk, the order rotating "
        "by one leg per round, so a change in load hits all legs. **× columns are per-round speed ratios on the same "
        f"chunk: median [min–max] over the {n_rounds} rounds.** Accuracy: every leg's raw output scored with the "
        "task's own parser and metric. Speed figures are from a shared 2-core machine: read the ratios, not the "
        "absolute ex/s.",
        "",
        "## Generation vs generation",
        "",
        "| task | leg | examples | ex/s | × naive `generate` loop | × DSPy | accuracy | unparsed | model calls "
        "| tokens run / example | tokens/s (% of matmul peak) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in report["tasks"]:
        s, r = t["summary"]["legs"], t["summary"]["ratios"]
        lines.append(
            leg_row(t["task"], "naive_generate", s["naive_generate"], ["1", fmt_ratio(r.get("naive_generate/dspy"))])
        )
        lines.append(
            leg_row(
                t["task"],
                "promptopt_generate",
                s["promptopt_generate"],
                [
                    fmt_ratio(r["promptopt_generate/naive_generate"], True),
                    fmt_ratio(r.get("promptopt_generate/dspy"), True),
                ],
            )
        )
        if "dspy" in s:
            naive_over_dspy = r["naive_generate/dspy"]
            inverse = {k: 1 / naive_over_dspy[k] for k in ("median", "max", "min")}
            inverse["min"], inverse["max"] = inverse["max"], inverse["min"]
            lines.append(leg_row(t["task"], "dspy", s["dspy"], [fmt_ratio(inverse), "1"]))
    lines += [""]
    for t in report["tasks"]:
        g = t["summary"]["generation_agreement"]
        lines.append(
            f"- {t['task']} (max_tokens {t['max_tokens']}, stop {t['stop']}): the naive loop and promptopt generated "
            f"the same text on {g['output']['same']}/{g['output']['n']} examples (same parsed answer on "
            f"{g['prediction']['same']}/{g['prediction']['n']}); prompt tokens identical: "
            f"{'yes' if t['same_prompt_tokens'] else 'NO'}."
        )
    lines += [
        "",
        "DSPy is given the same instruction, demos and examples but renders them in its own ChatAdapter format "
        f"(demos as chat turns, `[[ ## field ## ]]` markers) and may write up to {DSPY_MAX_TOKENS} tokens (its "
        "markers need ~20), so it runs more tokens per example than the task template; that is part of what a DSPy "
        "user pays. DSPy ran as a long-lived subprocess of its own venv that loaded the model once (not timed); "
        "its seconds are those of the `Evaluate` call; model calls are counted at its engine (behind DSPy's "
        "fresh response cache). For a classification task promptopt's generation requests carry the labels, so "
        "a row stops as soon as its reply is a complete label; the naive loop stops at the stop string or "
        "max_tokens.",
        "",
    ]
    scored = [t for t in report["tasks"] if "naive_score" in t["summary"]["legs"]]
    if scored:
        lines += [
            "## Label scoring vs label scoring",
            "",
            "| task | leg | examples | ex/s | × naive scoring loop | accuracy | unparsed | model calls "
            "| tokens run / example | tokens/s (% of matmul peak) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for t in scored:
            s, r = t["summary"]["legs"], t["summary"]["ratios"]
            lines.append(leg_row(t["task"], "naive_score", s["naive_score"], ["1"]))
            po = [fmt_ratio(r["promptopt_score/naive_score"], True)]
            lines.append(leg_row(t["task"], "promptopt_score", s["promptopt_score"], po))
        lines.append("")
        for t in scored:
            a = t["summary"]["label_agreement"]
            lines.append(
                f"- {t['task']} (labels {t['labels']}): both picked the same label on **{a['same']}/{a['n']}** "
                f"examples; largest label log-prob difference {t['summary']['max_logprob_diff']:.1e}."
            )
        lines += [
            "",
            "The naive loop makes one forward pass per example and label over the whole prompt plus the label "
            "(model calls = examples × labels) and sums the label tokens' log-probabilities; promptopt computes the "
            "shared prefix (instruction + demos) once per cold evaluation and packs each batch's suffixes and labels "
            "into one forward pass (model calls = requests).",
            "",
        ]
    lines += [
        "## Warm cache (promptopt: the same evaluation again, on the cache the cold leg filled)",
        "",
        "| task | mode | examples | ex/s | model calls |",
        "|---|---|---|---|---|",
    ]
    for t in report["tasks"]:
        for key in ("promptopt_generate", "promptopt_score"):
            if key in t["summary"]["legs"]:
                s = t["summary"]["legs"][key]
                mode = key.split("_")[1]
                lines.append(
                    f"| {t['task']} | {mode} | {s['n']} | {s['warm']['ex_per_s']:.0f} | **{s['warm']['calls']}** |"
                )
    lines += [
        "",
        "## Rounds",
        "",
        "| task | round | examples | load (start→end) | promptopt gen / naive gen | promptopt gen / DSPy "
        "| naive gen / DSPy | promptopt score / naive score |",
        "|---|---|---|---|---|---|---|---|",
    ]
    keys = ("promptopt_generate/naive_generate", "promptopt_generate/dspy", "naive_generate/dspy")
    for t in report["tasks"]:
        r = t["summary"]["ratios"]
        for i, rd in enumerate(t["rounds"]):
            cells = [f"{r[k]['rounds'][i]:.2f}" if k in r else "-" for (k) in (*keys, "promptopt_score/naive_score")]
            lines.append(
                f"| {t['task']} | {rd['round']} | {rd['n']} | {rd['load'][0]:.2f}→{rd['load'][1]:.2f} | "
                + " | ".join(cells)
                + " |"
            )
    lines += [
        "",
        "Tokens run: the naive loops and DSPy count every prompt token they fed and every token generated; "
        "promptopt counts the shared prefix once per cold evaluation (each chunk), each example's own suffix, and "
        "the generated tokens (generate) or each label's tokens after the first (score; the first is read from the "
        "prompt's last logits). % of matmul peak: 2 × parameters FLOPs per token run.",
        "",
    ]
    if "racing" in report:
        lines += racing_markdown(report["racing"])
    if "dtype" in report:
        lines += dtype_markdown(report["dtype"])
    path.write_text("\n".join(lines))


def racing_markdown(r: dict[str, Any]) -> list[str]:
    lines = [
        f"## Racing ({r['task']} dev, {r['mode']})",
        "",
        f"Made by a separate run: {provenance_line(r.get('provenance', {}))}.",
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
            "in smaller batches. Savings on separable candidates are exercised in "
            "tests/unit/optimizers/test_racing.py.",
            "",
        ]
    return lines


def dtype_markdown(d: dict[str, Any]) -> list[str]:
    return [
        "## CPU dtype: float32 vs bfloat16 (sst2, 8 demos, label scoring)",
        "",
        f"Made by a separate run: {provenance_line(d.get('provenance', {}))}.",
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


def dtype_leg(n: int = 48) -> dict[str, Any]:
    """float32 vs bfloat16 label scoring on sst2: speed, and how much scores move with the batch path."""
    import dataclasses

    from promptopt.core.taskfile import load_task
    from promptopt.models.base import ScoreRequest
    from promptopt.models.hf import cpu_has_bf16, load_smollm2

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

    from promptopt.core.taskfile import load_task
    from promptopt.evaluation.evaluator import Evaluator
    from promptopt.models.budget import BudgetTracker
    from promptopt.models.client import ModelClient
    from promptopt.optimizers.racing import race

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
    parser.add_argument("--n", type=int, default=80, help="test examples per task (every leg runs all of them)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (chunks of the examples)")
    parser.add_argument(
        "--dspy-python", default="/work/venv-dspy/bin/python", help="python of the DSPy venv ('' skips DSPy)"
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "evaluator"))
    parser.add_argument("--racing-only", action="store_true", help="re-make the racing section of an --out run")
    parser.add_argument("--dtype-only", action="store_true", help="re-make the fp32/bf16 section of an --out run")
    parser.add_argument("--dspy-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dspy_worker:
        dspy_worker(args.dspy_worker)
        return
    if args.dspy_python and not Path(args.dspy_python).exists():
        sys.exit(f"no DSPy venv at {args.dspy_python}; create it (see the module docstring) or pass --dspy-python ''")

    import platform

    import torch

    from promptopt.models.hf import load_smollm2

    run = provenance()  # the code this process runs: taken once, before anything else
    torch.set_num_threads(1)
    out = Path(args.out)
    json_path = out.with_suffix(".json")
    previous = json.loads(json_path.read_text()) if json_path.exists() else {}
    if args.racing_only or args.dtype_only:
        if not previous:
            sys.exit(f"no {json_path} to add a section to; run the main benchmark first")
        sections = {}
        if args.racing_only:
            sections["racing"] = racing_leg(load_smollm2(dtype="float32"))
        if args.dtype_only:
            sections["dtype"] = dtype_leg()
        stamp = {**run, "load_end": [round(x, 2) for x in os.getloadavg()]}
        report = {**previous, **{k: {**v, "provenance": stamp} for k, v in sections.items()}}
    else:
        hf = load_smollm2(dtype="float32")
        params = sum(p.numel() for p in hf.model.parameters())
        with tempfile.TemporaryDirectory() as tmp:
            worker = DSPyWorker(args.dspy_python, Path(hf.model.name_or_path), Path(tmp)) if args.dspy_python else None
            peak = statistics.median(matmul_gflops(torch) for _ in range(3))
            print(f"matmul {peak:.1f} GFLOP/s, {params / 1e6:.1f} M params, load {os.getloadavg()}", flush=True)
            tasks = [bench_task(name, args, hf, worker) for name in args.tasks]
            peak_end = statistics.median(matmul_gflops(torch) for _ in range(3))
            if worker is not None:
                worker.close()
        for t in tasks:
            t["summary"] = summarize(t, params, peak)
        report = {
            "provenance": {**run, "load_end": [round(x, 2) for x in os.getloadavg()]},
            "environment": {
                "cpu": platform.processor() or platform.machine(),
                "cores": os.cpu_count(),
                "threads": torch.get_num_threads(),
                "matmul_n": 2048,
                "matmul_gflops": peak,
                "matmul_gflops_end": peak_end,
                "params": params,
                "dtype": hf.dtype,
                "dspy_worker": worker.info["versions"] if worker is not None else None,
            },
            "tasks": tasks,
            **{k: previous[k] for k in ("racing", "dtype") if k in previous},  # other runs' sections, as they were
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=1) + "\n")
    write_markdown(report, out.with_suffix(".md"))
    print(out.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
