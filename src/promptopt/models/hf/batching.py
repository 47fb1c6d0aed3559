"""Batch planning for :class:`~promptopt.models.hf.HFModel`: the prepared requests, batches within a memory budget,
and running a batch with per-request failure isolation.

- **Batches.** Within a group, requests are sorted by length and left-padded into batches of at most
  ``batch_size`` rows whose estimated memory (KV cache + activations + logits) fits ``memory_budget``
  (``batch_size="auto"``: up to 32 rows on CPU, 256 on a GPU; the budget defaults to 2 GB on CPU and half
  the free memory on a GPU). On CPU a scoring batch also holds at most 4096 tokens (rows x length).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from promptopt.models.base import GenerationRequest

_AUTO_ROWS = {"cpu": 32, "cuda": 256}
"""Batch rows with ``batch_size="auto"``: CPU throughput stops growing at ~32 rows (feasibility study)."""
_CPU_BUDGET = 2 * 1024**3
_CPU_ROW_TOKENS = 4096
"""On CPU, tokens per scoring batch (rows x length): compute-bound prompt passes gain nothing from more,
and a packed row's attention grows with its square. Generation batches are not capped: decoding reads all
weights once per step whatever the rows, so the more rows the better."""


@dataclass(frozen=True)
class _Prepared:
    index: int
    """Position in the caller's request list."""
    ids: list[int]
    """Prompt token ids."""
    prefix: int = 0
    """Leading ids whose KV cache is shared with the other requests of the group (computed once)."""

    @property
    def rows(self) -> int:
        """Batch rows of KV cache this item needs."""
        return 1

    @property
    def extra(self) -> int:
        """Tokens this item adds after the prompt (generated, or continuation tokens)."""
        return 0


@dataclass(frozen=True, kw_only=True)  # keyword-only: ``request`` needs no default after _Prepared's ``prefix``
class _Gen(_Prepared):
    request: GenerationRequest
    max_new: int = 1
    seed: int = 0

    @property
    def extra(self) -> int:
        return self.max_new


@dataclass(frozen=True)
class _Score(_Prepared):
    continuations: tuple[tuple[int, ...], ...] = ()

    @property
    def rows(self) -> int:
        return 1 + sum(len(c) > 1 for c in self.continuations)  # + a copy of the prompt cache per long one

    @property
    def extra(self) -> int:
        return max((len(c) for c in self.continuations), default=0)


_Request = TypeVar("_Request")
_Item = TypeVar("_Item", bound=_Prepared)
_Result = TypeVar("_Result")


def common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    """Length of the longest common prefix of ``seqs`` (0 for none)."""
    if not seqs:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs)
    for s in seqs[1:]:
        i = 0
        while i < n and s[i] == first[i]:
            i += 1
        n = i
    return n


class _Batching:
    """HFModel's batch planning: which prepared items run together in one forward pass."""

    model: Any
    device: Any
    dtype: str
    batch_size: int
    memory_budget: int

    def _batches(self, items: list[_Item]) -> Iterator[list[_Item]]:
        """Items with one prefix, longest first; at most ``batch_size`` items within ``memory_budget``."""
        batch: list[_Item] = []
        rows = width = extra = 0
        for item in sorted(items, key=lambda it: (it.ids[: it.prefix], -len(it.ids))):
            if batch and (
                item.prefix != batch[0].prefix
                or item.ids[: item.prefix] != batch[0].ids[: item.prefix]
                or len(batch) == self.batch_size
                or (
                    self.device.type == "cpu"
                    and isinstance(item, _Score)
                    and (rows + item.rows) * (item.prefix + width) > _CPU_ROW_TOKENS
                )
                or self._batch_bytes(len(batch) + 1, rows + item.rows, item.prefix, width, max(extra, item.extra))
                > self.memory_budget
            ):
                yield batch
                batch, rows, width, extra = [], 0, 0, 0
            batch.append(item)
            rows += item.rows
            width = max(width, len(item.ids) - item.prefix)
            extra = max(extra, item.extra)
        if batch:
            yield batch

    def _batch_bytes(self, items: int, rows: int, prefix: int, width: int, extra: int) -> int:
        """Estimated peak memory of a batch: KV cache, prefill activations and attention, logits."""
        c = self.model.config
        heads = getattr(c, "num_attention_heads", 1)
        hidden = getattr(c, "hidden_size", 1)
        head_dim = getattr(c, "head_dim", None) or hidden // heads
        kv_heads = getattr(c, "num_key_value_heads", None) or heads
        layers = getattr(c, "num_hidden_layers", 1)
        size = 2 if self.dtype == "bfloat16" else 4
        kv = rows * (prefix + width + extra) * 2 * layers * kv_heads * head_dim * size
        inner = getattr(c, "intermediate_size", None) or 4 * hidden
        activations = items * width * (6 * hidden + 3 * inner) * size
        attention = items * heads * width * (prefix + width) * 4
        logits = rows * max(extra, 1) * getattr(c, "vocab_size", 1) * 4
        return kv + activations + attention + logits


def _isolated(
    batch: list[_Item], run_batch: Callable[[list[_Item]], list[_Result]], failed: Callable[[str], _Result]
) -> list[_Result]:
    """``run_batch(batch)``; if it raises, each item alone, so only the failing ones get an error result."""
    try:
        return run_batch(batch)
    except Exception as exc:
        if len(batch) == 1:
            return [failed(_describe(exc))]
        return [result for item in batch for result in _isolated([item], run_batch, failed)]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
