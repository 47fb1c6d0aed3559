"""Label scoring over an OpenAI-compatible server, and several endpoints (issue 14). Loopback servers only.

1. **Scoring over the server = scoring in process.** SmolLM2-135M (fp32) scores the sst2 dev split's first
   ``--n`` examples with the seed prompt twice: in process (``HFModel``), and as ``litellm:openai/smollm2`` through
   :class:`~promptopt.testing.openai_completions.ModelServer` serving the same model (``/v1/completions``, echo +
   logprobs, ``score_batch`` prompts per request). Reported: prediction agreement, the largest label log-prob
   difference, accuracy with its 95% CI, HTTP requests and wall time of each (the server runs the model on the same
   CPU, one prompt per forward pass, so its time says nothing about vLLM's).
2. **Several endpoints.** ``--requests`` chat requests through one ``LiteLLMModel`` over loopback echo servers
   (20 ms latency each): two healthy; two healthy + one answering every request with a 500; one healthy + one that
   never answers (2 s timeout). Reported: requests answered, attempts per endpoint, wall time.

    python benchmarks/bench_litellm_score.py     # ~2 minutes; writes benchmarks/results/litellm_score.{md,json}
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from provenance import provenance  # noqa: E402

import promptopt  # noqa: E402
from promptopt.core.messages import Message  # noqa: E402
from promptopt.models import GenerationRequest, get_model  # noqa: E402
from promptopt.models.hf import HFModel, load_smollm2  # noqa: E402
from promptopt.testing.openai_completions import COMPLETIONS_PATHS, ModelServer  # noqa: E402
from promptopt.testing.openai_server import OpenAIServer  # noqa: E402


def scoring(n: int, score_batch: int) -> dict[str, Any]:
    model = load_smollm2(dtype="float32")
    assert isinstance(model, HFModel)
    task = promptopt.load_task("sst2")
    prompt = task.seed_prompt()
    start = time.perf_counter()
    local = promptopt.evaluate(task, model, prompt, split="dev", limit=n, cache=False)
    local_s = time.perf_counter() - start
    tokenizer = str(Path(model.tokenizer.name_or_path))
    with ModelServer(model) as srv:
        remote_model = get_model("litellm:openai/smollm2", api_base=srv.base_url + "/v1", api_key="none",
                                 tokenizer=tokenizer, score_batch=score_batch)  # fmt: skip
        start = time.perf_counter()
        remote = promptopt.evaluate(task, remote_model, prompt, split="dev", limit=n, cache=False)
        remote_s = time.perf_counter() - start
    sent = [len(q.body["prompt"]) for q in srv.requests if q.path in COMPLETIONS_PATHS]
    pairs = zip(remote.records, local.records, strict=True)
    diffs = [abs(a - b) for r, h in pairs for a, b in zip(r.label_logprobs or (), h.label_logprobs or (), strict=True)]
    agree = sum(r.prediction == h.prediction for r, h in zip(remote.records, local.records, strict=True))
    return {
        "task": "sst2", "split": "dev", "n": n, "score_batch": score_batch, "mode": [local.mode, remote.mode],
        "agreement": agree, "max_abs_logprob_diff": max(diffs),
        "in_process": {"accuracy": local.mean, "ci": list(local.ci), "seconds": round(local_s, 2)},
        "server": {"accuracy": remote.mean, "ci": list(remote.ci), "seconds": round(remote_s, 2),
                   "completions_requests": len(sent), "prompts_per_request": sent},
    }  # fmt: skip


def endpoints(n: int) -> list[dict[str, Any]]:
    cases: dict[str, list[dict[str, Any]]] = {
        "2 healthy": [{"latency": 0.02}, {"latency": 0.02}],
        "2 healthy + 1 answering 500": [{"latency": 0.02}, {"latency": 0.02}, {"fault": lambda m, p: 500}],
        "1 healthy + 1 hanging": [{"latency": 0.02}, {"hang": True}],
    }
    rows = []
    for name, settings in cases.items():
        servers = [OpenAIServer(**s).start() for s in settings]
        try:
            model = get_model("litellm:openai/echo", api_base=[s.base_url + "/v1" for s in servers], api_key="none",
                              backoff=0.05, timeout=2.0, allowed_fails=2, cooldown=60)  # fmt: skip
            requests = [GenerationRequest(messages=(Message("user", f"q {i}"),)) for i in range(n)]
            start = time.perf_counter()
            out = model.generate(requests)
            seconds = time.perf_counter() - start
        finally:
            for s in servers:
                s.stop()
        rows.append({
            "case": name, "requests": n,
            "answered": sum(c.error is None and c.text == f"q {i}" for i, c in enumerate(out)),
            "attempts_per_endpoint": [len(s.requests) for s in servers],
            "answered_per_endpoint": [sum(r.answered for r in s.requests) for s in servers],
            "seconds": round(seconds, 2),
        })  # fmt: skip
    return rows


def render(data: dict[str, Any]) -> str:
    s, p = data["scoring"], data["provenance"]
    lines = [
        "# Label scoring over an OpenAI-compatible server; several endpoints (issue 14)", "",
        f"Commit `{p['commit']}`{' (dirty tree)' if p['dirty'] else ''}, `{p['command']}`, {p['started']}, "
        f"threads {p['threads']}, load {p['load_start']}; versions {p['versions']}.", "",
        f"## 1. sst2 dev, first {s['n']} examples, seed prompt, SmolLM2-135M fp32", "",
        "| path | accuracy [95% CI] | HTTP requests | seconds |", "|---|---|---|---|",
        f"| in process (HFModel) | {s['in_process']['accuracy']:.3f} [{s['in_process']['ci'][0]:.3f}, "
        f"{s['in_process']['ci'][1]:.3f}] | – | {s['in_process']['seconds']} |",
        f"| server /v1/completions (score_batch {s['score_batch']}) | {s['server']['accuracy']:.3f} "
        f"[{s['server']['ci'][0]:.3f}, {s['server']['ci'][1]:.3f}] | {s['server']['completions_requests']} "
        f"(prompts each: {s['server']['prompts_per_request']}; the first is the capability probe) | "
        f"{s['server']['seconds']} |", "",
        f"Predictions agree on **{s['agreement']} of {s['n']}** examples; largest label log-prob difference "
        f"**{s['max_abs_logprob_diff']:.2e}** nats. The loopback server runs the same model on the same CPU one prompt "
        "per forward pass (no KV-cache sharing), so its wall time is not a statement about a real server.", "",
        "## 2. One LiteLLMModel over several loopback endpoints (20 ms latency, 2 s timeout, allowed_fails 2)", "",
        "| endpoints | answered | attempts per endpoint | answered per endpoint | seconds |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for r in data["endpoints"]:
        lines.append(f"| {r['case']} | {r['answered']} of {r['requests']} | {r['attempts_per_endpoint']} | "
                     f"{r['answered_per_endpoint']} | {r['seconds']} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--score-batch", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "litellm_score.json")
    args = parser.parse_args()
    data = {
        "provenance": provenance(),
        "scoring": scoring(args.n, args.score_batch),
        "endpoints": endpoints(args.requests),
    }
    args.out.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    args.out.with_suffix(".md").write_text(render(data), encoding="utf-8")
    print(render(data))


if __name__ == "__main__":
    main()
