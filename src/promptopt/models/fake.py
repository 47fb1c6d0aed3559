"""A deterministic fake model for tests, docs and notebooks.

Modes (pick one): ``fn`` (a callable request → text), ``mapping`` (first key found in the last user
message → response), ``responses`` (consumed in order; an error when exhausted) or ``echo`` (the last
line of the user message). Tokens are counted by white space. ``fail`` injects per-request errors.
Label scoring is derived from the generated text: a continuation equal to the (normalised) generation
scores 0.0, others -10.0, unless a ``score_fn`` is given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Messages
from promptopt.core.metrics import normalize
from promptopt.models.base import Capabilities, Completion, GenerationRequest, ScoreRequest, Scores


def _tokens(messages: Messages) -> int:
    return sum(len(m.content.split()) for m in messages)


def last_user(messages: Messages) -> str:
    return next((m.content for m in reversed(messages) if m.role == "user"), "")


class FakeModel:
    """Deterministic stand-in for a model backend; records every request it receives."""

    def __init__(
        self,
        *,
        fn: Callable[[GenerationRequest], str] | None = None,
        mapping: Mapping[str, str] | None = None,
        responses: Sequence[str] | None = None,
        default: str = "",
        score_fn: Callable[[ScoreRequest], Sequence[float]] | None = None,
        fail: Callable[[GenerationRequest | ScoreRequest], str | None] | None = None,
        name: str = "fake",
        cost_per_token: float = 0.0,
    ) -> None:
        if sum(x is not None for x in (fn, mapping, responses)) > 1:
            raise ConfigError("give at most one of fn, mapping, responses", field="FakeModel")
        self._fn = fn
        self._mapping = dict(mapping) if mapping is not None else None
        self._responses = list(responses) if responses is not None else None
        self._default = default
        self._score_fn = score_fn
        self._fail = fail
        self._name = name
        self._cost_per_token = cost_per_token
        self.requests: list[GenerationRequest | ScoreRequest] = []

    @classmethod
    def from_spec(cls, mode: str, **options: Any) -> FakeModel:
        if mode == "echo":
            return cls(name="fake:echo", **options)
        raise ConfigError(f"unknown fake model mode {mode!r}; valid: fake:echo", field="model")

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(score=True, max_context=None)

    def _text(self, request: GenerationRequest) -> str:
        if self._fn is not None:
            return self._fn(request)
        user = last_user(request.messages)
        if self._mapping is not None:
            return next((v for k, v in self._mapping.items() if k in user), self._default)
        if self._responses is not None:
            if not self._responses:
                raise RuntimeError("FakeModel: scripted responses exhausted")
            return self._responses.pop(0)
        lines = [ln for ln in user.splitlines() if ln.strip()]
        return lines[-1] if lines else self._default

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        out = []
        for r in requests:
            self.requests.append(r)
            error = self._fail(r) if self._fail else None
            if error:
                out.append(Completion(error=error, prompt_tokens=_tokens(r.messages)))
                continue
            text = self._text(r)
            for s in r.stop:
                text = text.split(s, 1)[0] if s in text else text
            ptoks, ctoks = _tokens(r.messages), len(text.split())
            out.append(
                Completion(
                    text=text,
                    prompt_tokens=ptoks,
                    completion_tokens=ctoks,
                    cost=(ptoks + ctoks) * self._cost_per_token,
                )
            )
        return out

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        out = []
        for r in requests:
            self.requests.append(r)
            error = self._fail(r) if self._fail else None
            ptoks = _tokens(r.messages)
            if error:
                out.append(Scores(error=error, prompt_tokens=ptoks))
                continue
            if self._score_fn is not None:
                lps = tuple(float(x) for x in self._score_fn(r))
            else:
                said = normalize(self._text(GenerationRequest(messages=r.messages)))
                lps = tuple(0.0 if normalize(c) == said else -10.0 for c in r.continuations)
            out.append(Scores(logprobs=lps, prompt_tokens=ptoks, cost=ptoks * self._cost_per_token))
        return out
