"""Label scoring for :class:`~promptopt.models.hf.HFModel`: log-probabilities of continuations.

- :meth:`HFModel.score` reads the first token of every continuation from the prompt's last-position
  logits, so a single-token label costs no extra pass. Requests that share a prefix are packed into one
  row after the prefix — each suffix followed by its multi-token continuations, with a block attention
  mask and per-item positions — so one forward pass scores the whole batch, every label exactly, without
  copying the prefix's KV cache per row. Without a shared prefix, the prompts run left-padded (last
  position only) and the remaining tokens of multi-token continuations in one further pass against
  their KV cache.
"""

from __future__ import annotations

from promptopt.core._imports import require
from promptopt.models.base import Scores
from promptopt.models.hf.batching import _Score
from promptopt.models.hf.prefix import _PrefixCache

torch = require("torch", extra="hf", feature="HFModel")


class _Scoring(_PrefixCache):
    """HFModel's scoring passes over one planned batch of :class:`_Score` items."""

    @torch.inference_mode()
    def _score_batch(self, batch: list[_Score]) -> list[Scores]:
        if batch[0].prefix:
            return self._score_packed(batch)
        first, cache, mask, last = self._prefill(batch)
        first = first.log_softmax(-1)
        totals = [[float(first[b, c[0]]) if c else 0.0 for c in item.continuations] for b, item in enumerate(batch)]
        pairs = [(b, j) for b, item in enumerate(batch) for j, c in enumerate(item.continuations) if len(c) > 1]
        if pairs:
            rows = torch.tensor([b for b, _ in pairs], device=self.device)
            conts = [list(batch[b].continuations[j]) for b, j in pairs]
            width = max(len(c) for c in conts) - 1
            tokens = torch.tensor([c + [self._pad] * (width + 1 - len(c)) for c in conts], device=self.device)
            real = torch.tensor([[1] * (len(c) - 1) + [0] * (width + 1 - len(c)) for c in conts], device=self.device)
            cache.reorder_cache(rows)
            out = self._forward(
                tokens[:, :-1],
                torch.cat([mask[rows], real], dim=1),
                last[rows] + 1 + torch.arange(width, device=self.device),
                cache,
            )
            logprobs = out.logits.float().log_softmax(-1).gather(-1, tokens[:, 1:, None]).squeeze(-1)
            for (b, j), row in zip(pairs, (logprobs * real).sum(-1).tolist(), strict=True):
                totals[b][j] += row
        return [Scores(logprobs=tuple(t), prompt_tokens=len(item.ids)) for item, t in zip(batch, totals, strict=True)]

    def _score_packed(self, batch: list[_Score]) -> list[Scores]:
        """Score a batch that shares a prefix in one forward pass of one row, without copying the prefix.

        After the prefix, the row holds each item's suffix followed by its multi-token continuations
        (all but their last token); a block mask lets every token see the prefix, its own suffix and its
        own continuation only, and positions restart after the prefix for every item, so each item is
        computed exactly as if alone. Logits are kept only where a continuation token is read.
        """
        start = batch[0].prefix
        tokens: list[int] = []
        positions: list[int] = []
        owner: list[int] = []
        branch: list[int] = []  # -1: the item's suffix, j: its continuation j
        reads: list[tuple[int, int, int, int]] = []  # (item, continuation, packed index, token read)
        for b, item in enumerate(batch):
            suffix = item.ids[start:]
            tokens += suffix
            positions += range(start, start + len(suffix))
            owner += [b] * len(suffix)
            branch += [-1] * len(suffix)
            last = len(tokens) - 1
            for j, cont in enumerate(item.continuations):
                if not cont:
                    continue
                reads.append((b, j, last, cont[0]))
                for k, token in enumerate(cont[:-1]):
                    tokens.append(token)
                    positions.append(start + len(suffix) + k)
                    owner.append(b)
                    branch.append(j)
                    reads.append((b, j, len(tokens) - 1, cont[k + 1]))
        totals = [[0.0] * len(item.continuations) for item in batch]
        if reads:
            own, br, pos = (torch.tensor(x, device=self.device) for x in (owner, branch, positions))
            visible = (
                (own[:, None] == own[None, :])
                & ((br[None, :] == -1) | (br[None, :] == br[:, None]))
                & (pos[None, :] <= pos[:, None])
            )
            visible = torch.cat([visible.new_ones(len(tokens), start), visible], dim=1)
            dtype = self.model.dtype
            mask = torch.zeros(visible.shape, dtype=dtype, device=self.device)
            mask = mask.masked_fill(~visible, torch.finfo(dtype).min)[None, None]
            keep = sorted({t for _, _, t, _ in reads})
            row = {t: i for i, t in enumerate(keep)}
            out = self._forward(
                torch.tensor([tokens], device=self.device),
                mask,
                pos[None],
                self._cache_from(batch[0].ids[:start], 1),
                logits_to_keep=torch.tensor(keep, device=self.device),
            )
            logprobs = out.logits[0].float().log_softmax(-1)
            for b, j, t, token in reads:
                totals[b][j] += float(logprobs[row[t], token])
        return [Scores(logprobs=tuple(t), prompt_tokens=len(item.ids)) for item, t in zip(batch, totals, strict=True)]
