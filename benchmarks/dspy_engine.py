"""DSPy's engine protocol on an in-process ``transformers`` model, for the DSPy legs of the benchmarks.

Runs inside the DSPy venv (``/work/venv-dspy``, no promptopt there); imported by ``bench_evaluator.py
--dspy-leg`` and ``dspy_fewshot.py``. Use it as ``dspy.LM("local/smollm2", engine=LocalEngine(model, tok))``:
DSPy's response cache sits in front of the engine, so every ``complete`` is a real model call and the
counters here count exactly the calls and tokens the model spent.

Why this is not ``promptopt.models.dspy_lm.ClientEngine``: this engine is the *independent* DSPy baseline. It runs
in a venv without promptopt, calls ``model.generate`` directly and leaves caching to DSPy, so the DSPy leg measures
DSPy on its own stack. The package's engine routes DSPy through promptopt's ``ModelClient`` (promptopt's cache,
budget and backends; DSPy's cache off) — what ``bench_dspy_interop.py`` measures. The two share only the ~15 lines
that map DSPy's ``Request`` to chat messages and build its ``Response``.
"""

from __future__ import annotations

from typing import Any

DSPY_MAX_TOKENS = 32  # DSPy's field markers need ~20 tokens around a one-word answer


class LocalEngine:
    """One ``generate`` per call: greedy at temperature 0 (or unset), sampling at temperature > 0.

    ``max_tokens`` caps every call (a request may ask for fewer, never more). Sampled calls are seeded with
    ``torch.manual_seed(seed + <calls so far>)``, so a run that makes the same calls in the same order
    reproduces. ``calls``, ``input_tokens`` and ``output_tokens`` count every call that reached the model.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_tokens: int = DSPY_MAX_TOKENS, seed: int = 0) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_tokens, self.seed = max_tokens, seed
        self.calls = self.input_tokens = self.output_tokens = self.sampled_calls = 0

    def complete(self, request: Any) -> Any:
        import torch
        from dspy.lm15 import Message, Response, TextPart, Usage

        tok = self.tokenizer
        messages = []
        if request.system is not None:
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            messages.append({"role": "system", "content": system})
        messages += [{"role": m.role, "content": m.text or ""} for m in request.messages]
        inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        config = request.config
        max_new = min(config.max_tokens or self.max_tokens, self.max_tokens)
        temperature = config.temperature or 0.0
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(self.seed + self.calls)
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": config.top_p or 1.0}
            self.sampled_calls += 1
        self.calls += 1
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new, pad_token_id=tok.eos_token_id, **sampling)
        n_in = inputs["input_ids"].shape[1]
        new = out[0, n_in:]
        n_out = int(new.shape[0])
        self.input_tokens += n_in
        self.output_tokens += n_out
        text = tok.decode(new, skip_special_tokens=True)
        stopped = n_out < max_new or int(new[-1]) in _eos_ids(self.model, tok)
        usage = Usage(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out)
        return Response(
            id=None,
            model="local",
            message=Message.assistant([TextPart(text)]),
            finish_reason="stop" if stopped else "length",
            usage=usage,
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        pass

    def __deepcopy__(self, memo: dict) -> LocalEngine:
        return self  # copies of the LM or the program share the model and the counters

    def counters(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "sampled_calls": self.sampled_calls,
        }


def _eos_ids(model: Any, tok: Any) -> set[int]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    ids = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return ids | {tok.eos_token_id}


def load_model(model_dir: str) -> tuple[Any, Any]:
    """fp32 model and tokenizer from a ``transformers`` directory, in eval mode."""
    import torch
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tok
