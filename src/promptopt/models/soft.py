"""Soft prompts on in-process Hugging Face models (prompt tuning, Lester et al. 2021).

A soft prompt is ``n`` virtual-token embeddings placed before every prompt, in front of the chat template,
exactly where PEFT's prompt tuning puts them (positions 0..n-1). :class:`SoftPromptModel` shares a loaded
:class:`HFModel`'s weights and feeds the virtual tokens through :meth:`HFModel.embed`, so generation, label
scoring, batching and prefix caching work as for any model; its :attr:`~SoftPromptModel.name` adds the soft
prompt's content digest, so cached responses never mix soft prompts.

On disk a soft prompt is a PEFT prompt-tuning adapter directory that ``peft.PeftModel.from_pretrained(base,
directory)`` loads (``adapter_config.json``, ``adapter_model.safetensors`` holding ``prompt_embeddings``),
plus ``promptopt.json`` (base model, init, init seed, task, step). A directory is written once and never
changed: the candidate's id hashes its weights (:func:`promptopt.core.candidate.soft_prompt_digest`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from promptopt.core._imports import require
from promptopt.core.candidate import SOFT_PROMPT_WEIGHTS, soft_prompt_digest
from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Messages
from promptopt.models.base import Model
from promptopt.models.client import ModelClient
from promptopt.models.hf import HFModel

torch = require("torch", extra="hf", feature="soft prompts")
peft = require("peft", extra="hf", feature="soft prompts")
safetensors_torch = require("safetensors.torch", extra="hf", feature="soft prompts")

INITS = ("text", "random", "vocab")
"""Initialisations: the embeddings of a text's tokens (repeated to fill), PEFT's random normal, or the
embeddings of random vocabulary tokens (PEFT ``SAMPLE_VOCAB``)."""
META_FILE = "promptopt.json"
_PEFT_INIT = {"text": "TEXT", "random": "RANDOM", "vocab": "SAMPLE_VOCAB"}


def base_model_id(model: Model) -> str:
    """The model a soft prompt belongs to, without the dtype (a prompt trained in float32 runs in bfloat16)."""
    return model.name.rsplit("@", 1)[0]


def trainable_model(model: Model, *, purpose: str = "soft prompts") -> HFModel:
    """``model`` as an :class:`HFModel`, or a clear error naming what to use instead."""
    if isinstance(model, SoftPromptModel):
        return model.base
    if isinstance(model, HFModel) and model.capabilities.trainable:
        return model
    raise ConfigError(
        f"{purpose} need an in-process, trainable Hugging Face model; {model.name!r} is not one. "
        "Use --model smollm2 or --model hf:<path or hub id>.",
        field="model",
    )


def peft_config(base: HFModel, n_tokens: int, init: str = "random", *, text: str | None = None) -> Any:
    """PEFT's ``PromptTuningConfig`` for ``n_tokens`` virtual tokens on ``base``."""
    if init not in INITS:
        raise ConfigError(f"must be one of {list(INITS)}, got {init!r}", field="init")
    if init == "text" and not text:
        raise ConfigError("text initialisation needs a non-empty init_text", field="init_text")
    return peft.PromptTuningConfig(
        task_type=peft.TaskType.CAUSAL_LM,
        num_virtual_tokens=n_tokens,
        token_dim=base.model.get_input_embeddings().embedding_dim,
        num_transformer_submodules=1,
        prompt_tuning_init=_PEFT_INIT[init],
        prompt_tuning_init_text=text if init == "text" else None,
        tokenizer_name_or_path=base.model.name_or_path if init == "text" else None,
        base_model_name_or_path=base.model.name_or_path,
    )


def init_embeddings(
    base: HFModel, n_tokens: int, init: str = "random", *, text: str | None = None, seed: int = 0
) -> Any:
    """A new soft prompt (float32, shape ``(n_tokens, dim)``) initialised by PEFT; ``seed`` fixes random inits
    without touching the global torch RNG."""
    config = peft_config(base, n_tokens, init, text=text)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        encoder = peft.PromptEmbedding(config, base.model.get_input_embeddings())
    return encoder.embedding.weight.detach().float().cpu().clone()


@dataclass(frozen=True)
class SoftPrompt:
    """A soft prompt read from disk: its embeddings, digest and ``promptopt.json`` metadata."""

    path: Path
    embeddings: Any
    digest: str
    meta: Mapping[str, Any]

    @property
    def base_model(self) -> str:
        return str(self.meta.get("base_model", ""))


def save_soft_prompt(
    directory: str | Path, embeddings: Any, *, base: HFModel, config: Any | None = None, **meta: Any
) -> Path:
    """Write ``embeddings`` as a PEFT prompt-tuning adapter at ``directory`` (atomically; must not exist).

    ``config`` is the run's ``PromptTuningConfig`` (records the init); ``meta`` goes to ``promptopt.json``.
    """
    out = Path(directory)
    if out.exists():
        raise ConfigError("a soft prompt is written once; this directory already exists", source=str(out))
    weights = embeddings.detach().float().cpu().contiguous()
    config = copy.copy(config or peft_config(base, weights.shape[0]))
    config.inference_mode = True  # PEFT then loads the weights instead of initialising new ones
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        config.save_pretrained(str(tmp))
        safetensors_torch.save_file({"prompt_embeddings": weights}, str(tmp / SOFT_PROMPT_WEIGHTS))
        info = {"base_model": base_model_id(base), "n_tokens": weights.shape[0], "dim": weights.shape[1], **meta}
        (tmp / META_FILE).write_text(json.dumps(info, indent=2) + "\n")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def load_soft_prompt(directory: str | Path) -> SoftPrompt:
    """A soft prompt written by :func:`save_soft_prompt` (or any PEFT prompt-tuning adapter directory)."""
    path = Path(directory)
    weights = path / SOFT_PROMPT_WEIGHTS
    if not weights.is_file():
        raise ConfigError(f"not a soft-prompt adapter directory (no {SOFT_PROMPT_WEIGHTS})", source=str(path))
    embeddings = safetensors_torch.load_file(str(weights))["prompt_embeddings"]
    meta_file = path / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    return SoftPrompt(path, embeddings.float(), soft_prompt_digest(path), meta)


class SoftPromptModel(HFModel):
    """``base`` (sharing its loaded weights and tokenizer) with virtual-token embeddings before every prompt.

    The virtual tokens are ids past the vocabulary, prepended to every rendered prompt; :meth:`embed` maps
    them to ``embeddings``. Everything else is HFModel's: batching, the shared-prefix KV cache (the virtual
    tokens are a prefix every request shares), positions and masks. The ids are drawn per instance, so
    kept prefix caches never mix soft prompts. ``embeddings`` may be a trainable parameter: :meth:`nll` is
    differentiable in it. ``tag`` names the soft prompt in :attr:`name` (default: a digest of its values).
    """

    def __init__(self, base: HFModel, embeddings: Any, *, tag: str | None = None) -> None:
        vars(self).update(vars(base))
        self.base = base
        table = base.model.get_input_embeddings()
        if embeddings.ndim != 2 or embeddings.shape[1] != table.embedding_dim:
            raise ConfigError(
                f"a soft prompt of shape {tuple(embeddings.shape)} does not fit {base.name!r} "
                f"(embedding size {table.embedding_dim})",
                field="soft_prompt",
            )
        self.embeddings = embeddings if embeddings.device == base.device else embeddings.to(base.device)
        self._vocab = table.num_embeddings
        self._first = self._vocab + (uuid.uuid4().int % 2**40) * self.n_tokens
        if tag is None:
            tag = hashlib.sha256(self.embeddings.detach().float().cpu().numpy().tobytes()).hexdigest()[:12]
        self._name = f"{base.name}+soft:{tag}"

    def __repr__(self) -> str:
        return f"SoftPromptModel({self._name!r}, n_tokens={self.n_tokens})"

    @property
    def n_tokens(self) -> int:
        return int(self.embeddings.shape[0])

    def embed(self, ids: Any) -> Any:
        virtual = ids >= self._vocab
        out = super().embed(torch.where(virtual, 0, ids))
        rows = self.embeddings.to(out.dtype)[(ids - self._first).clamp(0, self.n_tokens - 1)]
        return torch.where(virtual[..., None], rows, out)

    def _render(self, messages: Messages) -> tuple[str, list[int]]:
        text, ids = super()._render(messages)
        return text, list(range(self._first, self._first + self.n_tokens)) + ids

    def _continuation(self, prompt_text: str, prompt_ids: list[int], continuation: str) -> list[int]:
        return super()._continuation(prompt_text, prompt_ids[self.n_tokens :], continuation)

    def nll(self, pairs: Sequence[tuple[Messages, str]], *, eos: bool = False) -> tuple[Any, int]:
        """Mean negative log-likelihood of each target as the assistant reply to its messages (summed over the
        target's tokens, plus end-of-turn when ``eos``), and the number of tokens the pass read.

        Tokenised like :meth:`score`. Gradients reach the model's weights too unless they are frozen
        (``model.requires_grad_(False)``).
        """
        rows, _, tokens = self.nll_rows(pairs, eos=eos)
        return rows.mean(), tokens

    def nll_rows(self, pairs: Sequence[tuple[Messages, str]], *, eos: bool = False) -> tuple[Any, Any, int]:
        """:meth:`nll` per pair (shape ``(n,)``), each pair's log-distribution over the vocabulary where its answer
        starts (``(n, vocab)``: what the model would answer), and the tokens read."""
        rows = []
        for messages, target in pairs:
            text, ids = self._render(messages)
            cont = self._continuation(text, ids, target) + ([self.tokenizer.eos_token_id] if eos else [])
            if not cont:
                raise ValueError("an empty training target")
            rows.append((ids + cont, len(cont)))
        width = max(len(seq) for seq, _ in rows)
        keep = max(n for _, n in rows)
        pad = [width - len(seq) for seq, _ in rows]
        ids = torch.tensor([[self._pad] * p + seq for p, (seq, _) in zip(pad, rows, strict=True)], device=self.device)
        mask = torch.tensor(
            [[0] * p + [1] * len(seq) for p, (seq, _) in zip(pad, rows, strict=True)], device=self.device
        )
        targets = ids[:, width - keep :]
        weight = torch.tensor([[0.0] * (keep - n) + [1.0] * n for _, n in rows], device=self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            inputs_embeds=self.embed(ids), attention_mask=mask, position_ids=positions, logits_to_keep=keep + 1
        )
        logprobs = out.logits[:, :-1].float().log_softmax(-1)
        picked = logprobs.gather(-1, targets[..., None]).squeeze(-1)
        first = logprobs[torch.arange(len(rows), device=self.device), torch.tensor([keep - n for _, n in rows])]
        return -(picked * weight).sum(-1), first, int(mask.sum())


def soft_prompted(client: ModelClient, path: str | Path) -> ModelClient:
    """``client`` with the soft prompt at ``path`` on its model (same cache, budget and role)."""
    soft = load_soft_prompt(path)
    base = trainable_model(client.model, purpose=f"the soft prompt at {path}")
    if soft.base_model and soft.base_model != base_model_id(base):
        raise ConfigError(
            f"this soft prompt was trained on {soft.base_model!r}; it cannot run on {base_model_id(base)!r}. "
            f"Evaluate it with --model {soft.base_model}.",
            source=str(path),
        )
    model = SoftPromptModel(base, soft.embeddings, tag=soft.digest)
    return ModelClient(model, cache=client.cache, budget=client.budget, role=client.role, batch_size=client.batch_size)
