"""Decoding for :class:`~promptopt.models.hf.HFModel`: greedy or seeded sampling, rows leaving as they finish.

- :meth:`HFModel.generate` decodes with its own loop: finished rows (eos, a stop string, the token limit)
  leave the batch at once, and sampling draws from a per-request generator seeded from the conversation
  and ``sample``, so a completion does not depend on which batch it ran in.
"""

from __future__ import annotations

from typing import Any

from promptopt.core._imports import require
from promptopt.models.base import Completion
from promptopt.models.hf.batching import _Gen
from promptopt.models.hf.prefix import _PrefixCache

torch = require("torch", extra="hf", feature="HFModel")


class _Decoding(_PrefixCache):
    """HFModel's decoding loop over one planned batch of :class:`_Gen` items."""

    tokenizer: Any
    _eos: set[int]

    @torch.inference_mode()
    def _generate_batch(self, batch: list[_Gen]) -> list[Completion]:
        logits, cache, mask, last = self._prefill(batch)
        generators = [self._generator(item) for item in batch]
        out: list[list[int]] = [[] for _ in batch]
        texts: list[str | None] = [None] * len(batch)
        active = list(range(len(batch)))  # batch indices of the rows still in the KV cache
        while active:
            for row, b in enumerate(active):
                token = self._next_token(logits[row], batch[b].request.temperature, generators[b])
                out[b].append(token)
                texts[b] = self._finished(batch[b], out[b], token)
            keep = [row for row, b in enumerate(active) if texts[b] is None]
            if not keep:
                break
            if len(keep) < len(active):
                index = torch.tensor(keep, device=self.device)
                cache.reorder_cache(index)
                mask, last, logits = mask[index], last[index], logits[index]
                active = [active[row] for row in keep]
            mask = torch.cat([mask, mask.new_ones(len(active), 1)], dim=1)
            last = last + 1
            step = torch.tensor([[out[b][-1]] for b in active], device=self.device)
            logits = self._forward(step, mask, last, cache).logits[:, -1].float()
        return [
            Completion(text=text or "", prompt_tokens=len(item.ids), completion_tokens=len(tokens))
            for item, tokens, text in zip(batch, out, texts, strict=True)
        ]

    def _generator(self, item: _Gen) -> Any:
        if item.request.temperature <= 0:
            return None
        return torch.Generator(device=self.device).manual_seed(item.seed)

    @staticmethod
    def _next_token(logits: Any, temperature: float, generator: Any) -> int:
        if generator is None:
            return int(logits.argmax())
        probs = (logits / temperature).softmax(-1)
        return int(torch.multinomial(probs, 1, generator=generator))

    def _finished(self, item: _Gen, tokens: list[int], token: int) -> str | None:
        """The final text if the row is done (eos, stop string, a completed label or token limit), else None."""
        eos = token in self._eos
        request = item.request
        if not (eos or request.stop or request.labels or len(tokens) >= item.max_new):
            return None
        text = self.tokenizer.decode(tokens[:-1] if eos else tokens, skip_special_tokens=True)
        cut = min((i for i in (text.find(s) for s in request.stop if s) if i >= 0), default=-1)
        if cut >= 0:
            return text[:cut]
        if eos or len(tokens) >= item.max_new or (request.labels and request.completes_label(text)):
            return text
        return None
