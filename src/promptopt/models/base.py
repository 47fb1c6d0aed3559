"""The model backend protocol and its typed request/response values.

A backend receives a *batch* of requests and returns one response per request, in order. Per-request
failures (an API error after retries, a timeout) are returned as responses with ``error`` set, never
raised, so one bad example cannot sink an evaluation. Backends that can score continuations
(log-likelihood of each label) implement :meth:`Model.score`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from promptopt.core.messages import Message, Messages

__all__ = ["Capabilities", "Completion", "GenerationRequest", "Message", "Messages", "Model", "ScoreRequest", "Scores"]


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """Generate a completion for ``messages``. ``sample`` distinguishes repeated samples at temperature > 0.

    ``labels``: a backend that decodes token by token may stop as soon as the reply (stripped, case-folded) is
    one of these and no longer label continues it — the answer of a classification task is complete.
    """

    messages: Messages
    max_tokens: int = 64
    temperature: float = 0.0
    stop: tuple[str, ...] = ()
    sample: int = 0
    labels: tuple[str, ...] = ()

    def key(self) -> dict[str, Any]:
        key = {
            "kind": "generate",
            "messages": [m.to_dict() for m in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stop": list(self.stop),
            "sample": self.sample if self.temperature > 0 else 0,
        }
        if self.labels:
            key["labels"] = list(self.labels)
        return key

    def completes_label(self, text: str) -> bool:
        """True when ``text`` is one of :attr:`labels` and no longer label starts with it."""
        reply = text.strip().casefold()
        folded = [label.strip().casefold() for label in self.labels]
        return reply in folded and not any(f != reply and f.startswith(reply) for f in folded)


@dataclass(frozen=True, kw_only=True)
class ScoreRequest:
    """Log-likelihood of each continuation as the assistant's reply to ``messages``."""

    messages: Messages
    continuations: tuple[str, ...]

    def key(self) -> dict[str, Any]:
        return {
            "kind": "score",
            "messages": [m.to_dict() for m in self.messages],
            "continuations": list(self.continuations),
        }


@dataclass(frozen=True, kw_only=True)
class Completion:
    text: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    error: str | None = None
    cached: bool = False


@dataclass(frozen=True, kw_only=True)
class Scores:
    """Total log-probability of each continuation (same order as the request)."""

    logprobs: tuple[float, ...] = ()
    prompt_tokens: int = 0
    cost: float = 0.0
    error: str | None = None
    cached: bool = False


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    score: bool = False
    """Exact continuation log-likelihoods (label scoring)."""
    trainable: bool = False
    """In-process weights that gradient methods (soft prompts) can use."""
    streams_results: bool = False
    """``generate(requests, on_result=callback)`` reports each answer as it arrives, before the batch is done."""
    max_context: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Model(Protocol):
    """What the evaluator needs from a backend."""

    @property
    def name(self) -> str:
        """Canonical identity (spec + anything that changes outputs); part of every cache key."""
        ...

    @property
    def capabilities(self) -> Capabilities: ...

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]: ...

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """Only called when ``capabilities.score`` is true."""
        ...


class StreamingModel(Model, Protocol):
    """A model whose ``capabilities.streams_results`` is true: ``generate`` reports each answer as it arrives."""

    def generate(
        self, requests: Sequence[GenerationRequest], *, on_result: Callable[[int, Completion], None] | None = None
    ) -> list[Completion]: ...
