"""The shared-prefix KV cache of :class:`~promptopt.models.hf.HFModel`, and the forward passes that start from it.

- **Shared prefix.** The requests of one evaluation share the instruction and demos, so their token ids
  share a long common prefix. Requests are grouped by their longest common token prefix (at least
  ``min_prefix`` tokens); the prefix's KV cache is computed once, kept (a few entries, LRU) for later
  calls, and shared by every row of a batch (a view, not a copy), so only each request's own suffix is
  run. Prefix tokens
  keep their positions, so the result is the unbatched computation up to float rounding (~1e-5 in fp32).
- Every forward pass goes through :meth:`HFModel.embed` (token ids → input embeddings), the one place
  where embeddings can be changed or prepended (soft prompts).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from promptopt.core._imports import require
from promptopt.models.hf.batching import _Item, _Prepared, common_prefix

torch = require("torch", extra="hf", feature="HFModel")
transformers = require("transformers", extra="hf", feature="HFModel")

_PREFIX_ENTRIES = 4
"""Prefix KV caches kept between calls (an evaluation's prefix is reused by every chunk of requests)."""


class _PrefixCache:
    """HFModel's forward passes: token ids through :meth:`embed`, on top of a kept shared-prefix KV cache."""

    model: Any
    device: Any
    min_prefix: int
    _pad: int
    _prefixes: OrderedDict[tuple[int, ...], Any]
    _cache_arg: str
    _weights_version: tuple[int, int] | None

    def embed(self, ids: Any) -> Any:
        """Input embeddings of the token ids ``ids`` (batch, length): every forward pass starts here."""
        return self.model.get_input_embeddings()(ids)

    def clear_prefix_cache(self) -> None:
        """Forget the shared-prefix KV caches (needed only after changing the model other than in place)."""
        self._prefixes.clear()

    def _share_prefixes(self, items: list[_Item]) -> list[_Item]:
        """Set each item's ``prefix``: the longest common token prefix of its group, or a kept prefix.

        Items sorted by ids form groups of neighbours sharing >= ``min_prefix`` tokens. A prefix kept from
        an earlier call is reused when it covers the group's common prefix up to ``min_prefix`` tokens
        (a lone request reuses any kept prefix it starts with).
        """
        if not self.min_prefix:
            return items
        self._drop_stale_prefixes()
        ordered = sorted(items, key=lambda it: it.ids)
        groups: list[tuple[list[_Item], int]] = []
        for item in ordered:
            if groups:
                group, shared = groups[-1]
                n = min(shared, common_prefix([group[-1].ids, item.ids]))
                if n >= self.min_prefix:
                    group.append(item)
                    groups[-1] = (group, n)
                    continue
            groups.append(([item], len(item.ids)))
        out: list[_Item] = []
        for group, shared in groups:
            cap = min(shared, min(len(it.ids) for it in group) - 1)  # every item keeps >= 1 token of its own
            ids = group[0].ids
            kept = max((len(k) for k in self._prefixes if len(k) <= cap and tuple(ids[: len(k)]) == k), default=0)
            if len(group) == 1 or (kept and cap - kept < self.min_prefix):
                prefix = kept
            else:
                prefix = cap if cap >= self.min_prefix else 0
            out += [replace(it, prefix=prefix) for it in group]
        return out

    # -- model passes ------------------------------------------------------------------------------------

    def _forward(self, ids: Any, mask: Any, positions: Any, cache: Any, **options: Any) -> Any:
        return self.model(
            inputs_embeds=self.embed(ids),
            attention_mask=mask,
            position_ids=positions,
            **{self._cache_arg: cache},
            **options,
        )

    def _drop_stale_prefixes(self) -> None:
        """Forget kept prefix caches when the model changed (another module, or parameters updated in place)."""
        version = (id(self.model), sum(p._version for p in self.model.parameters()))
        if version != self._weights_version:
            self._prefixes.clear()
            self._weights_version = version

    def _prefix_cache(self, ids: list[int]) -> Any:
        """The KV cache of ``ids`` (batch of one), computed once and kept (LRU)."""
        key = tuple(ids)
        cache = self._prefixes.get(key)
        if cache is None:
            cache = transformers.DynamicCache(config=self.model.config)
            tokens = torch.tensor([ids], device=self.device)
            positions = torch.arange(len(ids), device=self.device)[None]
            self._forward(tokens, torch.ones_like(tokens), positions, cache, logits_to_keep=1)
            self._prefixes[key] = cache
            while len(self._prefixes) > _PREFIX_ENTRIES:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(key)
        return cache

    def _prefill(self, batch: Sequence[_Prepared]) -> tuple[Any, Any, Any, Any]:
        """Left-padded forward over the batch's prompts after their shared prefix.

        Returns (last-position logits, KV cache, attention mask, last positions).
        """
        start = batch[0].prefix
        suffixes = [item.ids[start:] for item in batch]
        width = max(len(s) for s in suffixes)
        ids = torch.tensor([[self._pad] * (width - len(s)) + s for s in suffixes], device=self.device)
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in suffixes], device=self.device)
        positions = start + (mask.cumsum(-1) - 1).clamp(min=0)
        cache = self._cache_from(batch[0].ids[:start], len(batch))
        if start:
            mask = torch.cat([mask.new_ones(len(batch), start), mask], dim=1)
        out = self._forward(ids, mask, positions, cache, logits_to_keep=1)
        return out.logits[:, -1].float(), cache, mask, positions[:, -1:]

    def _cache_from(self, prefix: list[int], rows: int) -> Any:
        """A KV cache for ``rows`` rows that starts with the kept cache of ``prefix`` (empty for no prefix)."""
        cache = transformers.DynamicCache(config=self.model.config)
        if prefix:
            shape = (rows, -1, -1, -1)
            for layer, kept in enumerate(self._prefix_cache(prefix).layers):
                cache.update(kept.keys[:, :, :0].expand(shape), kept.values[:, :, :0].expand(shape), layer)
                # Views, not copies: the forward pass's concatenation with the new tokens is the only copy.
                cache.layers[layer].keys = kept.keys.expand(shape)
                cache.layers[layer].values = kept.values.expand(shape)
        return cache
