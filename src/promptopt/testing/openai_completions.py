"""The loopback server (:class:`~promptopt.testing.openai_server.OpenAIServer`) serving a real in-process model.

:class:`ModelServer` answers chat completions with :meth:`HFModel.generate` and ``POST /v1/completions`` with
``echo`` and ``logprobs`` the way vLLM does: every prompt token's log-probability under the model
(``token_logprobs``, None for the first), its text (``tokens``) and where it starts in the prompt text
(``text_offset``, characters). It generates nothing on ``/v1/completions`` (label scoring sends
``max_tokens=0``). ``logprobs=False`` imitates a server that echoes without log-probabilities. The server's fault
injection, request log and in-flight counts all apply.

>>> with ModelServer(tiny_model(tmp_path)) as srv:  # doctest: +SKIP
...     model = LiteLLMModel("openai/tiny", api_base=srv.base_url + "/v1", api_key="none", tokenizer=path)
"""

from __future__ import annotations

import threading
from typing import Any

from promptopt.core.messages import Message
from promptopt.models.base import GenerationRequest
from promptopt.models.hf import HFModel
from promptopt.testing.openai_server import CHAT_PATHS, OpenAIServer, _content, _Reply

COMPLETIONS_PATHS = ("/v1/completions", "/completions")


class ModelServer(OpenAIServer):
    """An OpenAI-compatible server backed by ``model``: chat completions and echoed completions with logprobs."""

    paths = (*CHAT_PATHS, *COMPLETIONS_PATHS)

    def __init__(self, model: HFModel, *, logprobs: bool = True, **options: Any) -> None:
        super().__init__(self._chat, **options)
        self.model = model
        self.logprobs = logprobs
        self._model_lock = threading.Lock()  # the HTTP server is threaded; HFModel is not thread-safe

    def _chat(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> str:
        request = GenerationRequest(
            messages=tuple(Message(str(m.get("role", "user")), _content(m)) for m in messages),
            max_tokens=int(params.get("max_completion_tokens") or params.get("max_tokens") or 64),
        )
        with self._model_lock:
            (completion,) = self.model.generate([request])
        if completion.error is not None:
            raise RuntimeError(completion.error)
        return completion.text

    def _invalid(self, path: str, body: dict[str, Any]) -> str | None:
        if path not in COMPLETIONS_PATHS:
            return super()._invalid(path, body)
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
            return "'prompt' must be a string or a non-empty list of strings"
        if body.get("stream"):
            return "this test server does not support streaming"
        return None

    def _payload(self, number: int, path: str, body: dict[str, Any], injected: str | None) -> _Reply:
        if path not in COMPLETIONS_PATHS:
            return super()._payload(number, path, body, injected)
        prompt = body["prompt"]
        choices, prompt_tokens = [], 0
        for index, text in enumerate([prompt] if isinstance(prompt, str) else prompt):
            tokens, offsets, values = self.token_logprobs(text)
            prompt_tokens += len(tokens)
            logprobs = {"tokens": tokens, "token_logprobs": values, "text_offset": offsets, "top_logprobs": None}
            echo = bool(body.get("echo"))
            choices.append({
                "index": index,
                "text": text if echo else "",
                "logprobs": logprobs if echo and self.logprobs and body.get("logprobs") is not None else None,
                "finish_reason": "length",
            })  # fmt: skip
        payload = {
            "id": f"cmpl-{number}",
            "object": "text_completion",
            "model": body.get("model", "test-model"),
            "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": 0, "total_tokens": prompt_tokens},
        }
        return _Reply(200, payload, injected)

    def token_logprobs(self, text: str) -> tuple[list[str], list[int], list[float | None]]:
        """(token texts, start offsets, log-probabilities) of ``text`` tokenized as is (no BOS added)."""
        import torch

        tokenizer = self.model.tokenizer
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        # offsets by cumulative decoding, as vLLM computes them (no whitespace trimming)
        decoded = [tokenizer.decode(ids[:i], clean_up_tokenization_spaces=False) for i in range(len(ids) + 1)]
        with self._model_lock, torch.inference_mode():
            tokens = torch.tensor([ids], device=self.model.device)
            logits = self.model.model(input_ids=tokens).logits[0].float().log_softmax(-1)
        values: list[float | None] = [None, *(float(logits[i - 1, ids[i]]) for i in range(1, len(ids)))]
        pieces = [decoded[i + 1][len(decoded[i]) :] for i in range(len(ids))]
        return pieces, [len(d) for d in decoded[:-1]], values
