"""The DSPy leg of the few-shot benchmark: LabeledFewShot or MIPROv2 (light) on a task's split spec.

Runs in the DSPy venv (``/work/venv-dspy``: torch, dspy, transformers, optuna; no promptopt) on the same
in-process model as promptopt (SmolLM2-135M-Instruct, fp32 CPU) through ``dspy.LM("local/smollm2",
engine=LocalEngine(...))`` (``dspy_engine.py``). The caller (``bench_fewshot.py``) writes one JSON split
spec per task and scores the raw test answers printed here with promptopt's own parser and metric.

    python -m venv /work/venv-dspy && /work/venv-dspy/bin/pip install torch==2.13.0 dspy==3.4.1 \\
        transformers==5.24.0 optuna==5.0.0          # MIPROv2 needs optuna (dspy[optuna])

    # in the main venv (imports promptopt): a spec with 32 train / 32 dev / 100 test examples
    python benchmarks/dspy_fewshot.py --make-spec ii_antonyms /tmp/ii_antonyms.json
    # in the DSPy venv
    /work/venv-dspy/bin/python benchmarks/dspy_fewshot.py --spec /tmp/ii_antonyms.json --method labeled
    /work/venv-dspy/bin/python benchmarks/dspy_fewshot.py --spec /tmp/ii_antonyms.json --method mipro --out r.json

Spec: ``{"task", "instruction", "input_fields", "output_field", "labels", "max_tokens", "model_dir",
"train", "dev", "test", "seed"}``, each example ``{"id", "inputs": {field: value}, "answer"}``.

Methods (each run gets a fresh ``DSPY_CACHEDIR``, so nothing is served from an earlier run's cache):

- ``labeled``: ``dspy.LabeledFewShot(k=4).compile(dspy.Predict(signature), trainset=train)`` (no model calls).
- ``mipro``: ``dspy.MIPROv2(metric, auto="light", num_threads=1, seed=seed)`` on train, valset=dev; the
  prompt model is the task model (the same engine, so its calls are counted too).

Both then predict every test example one at a time. The signature has the spec's input fields, one output
field and the seed instruction. DSPy's default adapter (ChatAdapter, JSONAdapter fallback) is kept as is; a
test example whose output neither adapter can parse gets a ``null`` prediction and counts in ``failures``.
Generation caps: task calls ``max(32, max_tokens + 16)`` new tokens (room for DSPy's field markers),
prompt-model calls (dataset summary, instruction proposals) ``PROMPT_MAX_TOKENS``. MIPROv2 runs with
``max_errors`` = no limit: with DSPy's default of 10 the first evaluation on dev stops at the tenth
unparsable output; an error scores 0, as in DSPy's Evaluate.

Output (last stdout line, and ``--out``): ``{"method", "task", "compile_calls", "compile_tokens",
"test_calls", "compile_seconds", "test_seconds", "predictions": {id: raw answer or null}, "instruction",
"demos", "failures", "fallbacks", "versions", "error", ...}``. Calls are counted at the engine: a call DSPy
serves from its (in-run) cache never reaches the model and is not counted. ``fallbacks``: test examples that
needed a second call (ChatAdapter failed, JSONAdapter retried); ``compile_parses``/``test_parses``: parse
successes and failures per adapter; ``error``: set when the compile raised (then no predictions).

Measured on ii_antonyms (seed 0): MIPROv2 light stops in step 2 with ``AdapterParseError``, because the
135M model never writes the ``proposed_instruction`` field in either format (135 calls, ~4.5 min; seeds 1
and 2 the same). ``--proposal-fallback`` (diagnostic, not DSPy's behaviour) keeps the current instruction
instead, so step 3 and the test run. ``--time-limit S`` (or SIGTERM) stops a run and still reports the
calls made so far.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PROMPT_MAX_TOKENS = 128  # instruction proposals and dataset summaries are sentences, not one word
LABELED_K = 4


class Interrupted(BaseException):  # not an Exception, so DSPy's `except Exception` lets it through
    """Raised in the main thread by SIGTERM or ``--time-limit``: the run stops and reports what it has."""


def _interrupt(signum: int, frame: Any) -> None:
    raise Interrupted(signal.Signals(signum).name)


# -- the spec (main venv) ----------------------------------------------------------------------------------
def make_spec(task_name: str, out: str, n_train: int = 32, n_dev: int = 32, n_test: int = 100, seed: int = 0) -> None:
    """Write a split spec from a shipped task (needs promptopt: run in the main venv)."""
    import promptopt

    task = promptopt.load_task(task_name)
    model_dir = promptopt.get_model("smollm2").model.name_or_path

    def rows(examples: Any) -> list[dict[str, Any]]:
        return [
            {"id": ex.id, "inputs": {k: str(v) for k, v in ex.inputs.items()}, "answer": ex.answer} for ex in examples
        ]

    train = list(task.train[:n_train])
    spec = {
        "task": task.name,
        "instruction": task.instruction,
        "input_fields": list(train[0].inputs),
        "output_field": "answer",
        "labels": list(task.labels) if task.labels else None,
        "max_tokens": task.generation.max_tokens,
        "model_dir": str(model_dir),
        "train": rows(train),
        "dev": rows(task.dev[:n_dev]),
        "test": rows(task.test[:n_test]),
        "seed": seed,
    }
    Path(out).write_text(json.dumps(spec, indent=1))
    print(f"wrote {out}: {len(spec['train'])} train, {len(spec['dev'])} dev, {len(spec['test'])} test")


# -- the DSPy side (DSPy venv) ------------------------------------------------------------------------------
def normalise(text: Any) -> str:
    first = str(text or "").strip().split("\n")[0]
    return first.strip().rstrip(".").strip().lower()


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("dspy", "torch", "transformers", "litellm", "optuna"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def parse_counter(dspy: Any) -> Any:
    """A DSPy callback counting adapter parse calls and failures per adapter class (ChatAdapter, JSONAdapter)."""

    class ParseCounter(dspy.utils.callback.BaseCallback):
        def __init__(self) -> None:
            self.pending: dict[str, tuple[str, str]] = {}
            self.counts: dict[str, dict[str, int]] = {}
            self.samples: list[dict[str, str]] = []  # the first unparsable outputs, for the report

        def on_adapter_parse_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
            signature = inputs.get("signature")
            fields = ",".join(getattr(signature, "output_fields", {}) or {})
            self.pending[call_id] = (type(instance).__name__, f"{fields}: {str(inputs.get('completion'))[:200]}")

        def on_adapter_parse_end(self, call_id: str, outputs: Any, exception: BaseException | None = None) -> None:
            adapter, text = self.pending.pop(call_id, ("?", ""))
            counts = self.counts.setdefault(adapter, {"parsed": 0, "failed": 0})
            counts["failed" if exception is not None else "parsed"] += 1
            if exception is not None and len(self.samples) < 8:
                self.samples.append({"adapter": adapter, "output": text})

        def take(self) -> dict[str, dict[str, int]]:
            counts, self.counts = self.counts, {}
            return counts

    return ParseCounter()


def patch_proposer(dspy: Any) -> dict[str, int]:
    """Diagnostic only (``--proposal-fallback``): an unparsable instruction proposal keeps the current instruction.

    Unpatched, MIPROv2's first proposal that neither adapter can parse ends the whole compile (the 135M model
    never writes the ``proposed_instruction`` field). This lets step 3 run, to see what a complete run costs.
    """
    from dspy.propose.grounded_proposer import GroundedProposer
    from dspy.utils.exceptions import AdapterParseError

    count = {"proposal_failures": 0}
    original = GroundedProposer.propose_instruction_for_predictor

    def propose(self: Any, *args: Any, **kwargs: Any) -> str:
        try:
            return original(self, *args, **kwargs)
        except AdapterParseError:
            count["proposal_failures"] += 1
            predictor = kwargs.get("predictor", args[1] if len(args) > 1 else None)
            return predictor.signature.instructions

    GroundedProposer.propose_instruction_for_predictor = propose
    return count


def run(spec: dict[str, Any], method: str, threads: int, proposal_fallback: bool = False) -> dict[str, Any]:
    import logging

    import torch

    torch.set_num_threads(threads)
    random.seed(spec["seed"])
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no network attempt at litellm import
    import dspy

    sys.path.insert(0, str(HERE))
    from dspy_engine import DSPY_MAX_TOKENS, LocalEngine, load_model

    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)  # "response was truncated" on every capped call
    progress: list[str] = []  # MIPROv2's step and score lines: how far a compile got

    class Progress(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage().strip()
            if any(key in message for key in ("==> STEP", "score", "Score", "Trial")):
                progress.append(f"{time.strftime('%H:%M:%S')} calls={engine.calls} {message[:300]}")

    logging.getLogger("dspy.teleprompt").addHandler(Progress())
    result: dict[str, Any] = {
        "method": method,
        "task": spec["task"],
        "compile_calls": 0,
        "compile_tokens": 0,
        "test_calls": 0,
        "test_tokens": 0,
        "compile_seconds": 0.0,
        "test_seconds": 0.0,
        "predictions": {},
        "instruction": spec["instruction"],
        "demos": [],
        "failures": 0,
        "fallbacks": 0,
        "versions": versions(),
        "error": None,
    }
    inputs, output = list(spec["input_fields"]), spec["output_field"]
    task_max = max(DSPY_MAX_TOKENS, int(spec["max_tokens"]) + 16)
    result["max_tokens"] = {"task": task_max, "prompt": PROMPT_MAX_TOKENS}

    model, tok = load_model(spec["model_dir"])
    engine = LocalEngine(model, tok, max_tokens=max(task_max, PROMPT_MAX_TOKENS), seed=int(spec["seed"]))
    lm = dspy.LM("local/smollm2", engine=engine, temperature=0.0, max_tokens=task_max)
    parses = parse_counter(dspy)
    dspy.configure(lm=lm, callbacks=[parses])

    fields: dict[str, Any] = {name: (str, dspy.InputField()) for name in inputs}
    fields[output] = (str, dspy.OutputField())
    signature = dspy.make_signature(fields, spec["instruction"])

    def example(row: dict[str, Any]) -> Any:
        return dspy.Example(**row["inputs"], **{output: row["answer"]}).with_inputs(*inputs)

    def metric(gold: Any, pred: Any, trace: Any = None) -> bool:
        return normalise(getattr(pred, output, None)) == normalise(gold[output])

    train, dev = [example(r) for r in spec["train"]], [example(r) for r in spec["dev"]]

    def spent() -> tuple[int, int]:
        return engine.calls, engine.input_tokens + engine.output_tokens

    calls0, tokens0 = spent()
    t = time.perf_counter()
    try:
        if method == "labeled":
            program = dspy.LabeledFewShot(k=LABELED_K).compile(dspy.Predict(signature), trainset=train)
        else:
            if proposal_fallback:
                result["proposal_fallback"] = patch_proposer(dspy)
            optimizer = dspy.MIPROv2(
                metric=metric,
                prompt_model=lm.copy(max_tokens=PROMPT_MAX_TOKENS),
                task_model=lm,
                auto="light",
                num_threads=1,
                max_errors=10**9,
                seed=int(spec["seed"]),
            )
            program = optimizer.compile(dspy.Predict(signature), trainset=train, valset=dev)
    except (Exception, Interrupted) as exc:  # report how far the compile got
        result["error"] = f"compile: {type(exc).__name__}: {exc}"
        result["traceback"] = traceback.format_exc()[-4000:]
        program = None
    result["compile_progress"] = progress[-40:]
    result["compile_seconds"] = time.perf_counter() - t
    calls1, tokens1 = spent()
    result["compile_calls"], result["compile_tokens"] = calls1 - calls0, tokens1 - tokens0
    result["compile_sampled_calls"] = engine.sampled_calls
    result["compile_parses"] = parses.take()
    result["parse_failure_samples"] = parses.samples
    if program is None:
        return result

    predictor = program.predictors()[0]
    result["instruction"] = predictor.signature.instructions
    result["demos"] = [
        {"inputs": {k: d.get(k) for k in inputs}, "answer": d.get(output), "augmented": bool(d.get("augmented"))}
        for d in predictor.demos
    ]

    errors: list[str] = []
    correct = 0
    t = time.perf_counter()
    for row in spec["test"]:
        before = engine.calls
        try:
            answer = getattr(program(**row["inputs"]), output)
            answer = None if answer is None else str(answer)
        except Interrupted as exc:
            result["error"] = f"test: Interrupted ({exc}) after {len(result['predictions'])} examples"
            break
        except Exception as exc:
            answer = None
            result["failures"] += 1
            if len(errors) < 3:
                errors.append(f"{type(exc).__name__}: {str(exc)[:300]}")
        result["fallbacks"] += engine.calls - before > 1
        result["predictions"][row["id"]] = answer
        correct += answer is not None and normalise(answer) == normalise(row["answer"])
    result["test_seconds"] = time.perf_counter() - t
    calls2, tokens2 = spent()
    result["test_calls"], result["test_tokens"] = calls2 - calls1, tokens2 - tokens1
    result["test_parses"] = parses.take()
    result["exact_match"] = correct / len(spec["test"])  # for a quick look; the caller scores with its own metric
    result["failure_examples"] = errors
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--spec", help="split spec JSON")
    parser.add_argument("--method", choices=("labeled", "mipro"), default="labeled")
    parser.add_argument("--out", help="also write the result JSON here")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--time-limit", type=int, help="seconds; then stop and report the calls made so far")
    parser.add_argument(
        "--proposal-fallback", action="store_true", help="diagnostic: patch MIPROv2 to survive unparsable proposals"
    )
    parser.add_argument("--make-spec", nargs=2, metavar=("TASK", "OUT"), help="write a spec (main venv)")
    args = parser.parse_args()
    if args.make_spec:
        make_spec(*args.make_spec)
        return
    if not args.spec:
        parser.error("--spec is required")
    spec = json.loads(Path(args.spec).read_text())
    cache_dir = tempfile.mkdtemp(prefix="dspy_cache_")
    os.environ["DSPY_CACHEDIR"] = cache_dir  # before dspy is imported: a fresh cache for every run
    signal.signal(signal.SIGTERM, _interrupt)
    if args.time_limit:
        signal.signal(signal.SIGALRM, _interrupt)
        signal.alarm(args.time_limit)
    try:
        result = run(spec, args.method, args.threads, args.proposal_fallback)
    finally:
        signal.alarm(0)
        shutil.rmtree(cache_dir, ignore_errors=True)
    line = json.dumps(result)
    if args.out:
        Path(args.out).write_text(line + "\n")
    print("\n" + line, flush=True)  # on a line of its own (DSPy's progress bars write to stdout)
    if result["error"] and "Interrupted" in result["error"]:
        os._exit(0)  # an interrupted Evaluate leaves queued jobs in its worker thread: do not wait for them


if __name__ == "__main__":
    main()
