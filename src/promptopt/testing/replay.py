"""Record/replay of model sessions: a JSON *cassette* maps each request to the response it got.

- :class:`RecordingModel` wraps any :class:`~promptopt.models.base.Model`, forwards every request and
  writes the exchange to the cassette (after every batch, so an interrupted recording is still usable).
- :class:`ReplayModel` answers from a cassette, without the original model, and raises
  :class:`CassetteMiss` on a request it has not seen — a replayed run can never silently diverge.

Requests are matched on their canonical form (``request.key()``: messages, decoding settings, sample
index), the same key the response cache uses. The replay model keeps the recorded model's ``name`` and
capabilities, so cache keys and run configs are those of the recorded session. Typical use (a golden
test for an LLM-driven optimizer)::

    proposer = RecordingModel(get_model("smollm2"), "cassettes/pe2_toy.json")   # once, deliberately
    proposer = ReplayModel("cassettes/pe2_toy.json")                            # in CI
    result = promptopt.optimize(task, "pe2", task_model, proposer=proposer, cache=False)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from promptopt.core._files import write_text_atomic
from promptopt.core.exceptions import PromptOptError
from promptopt.models.base import Capabilities, Completion, GenerationRequest, Model, ScoreRequest, Scores
from promptopt.models.fake import last_user

CASSETTE_FORMAT = "promptopt-cassette"
CASSETTE_VERSION = 1


class CassetteMiss(PromptOptError, LookupError):
    """A replayed request is not in the cassette (the code or the inputs changed since recording)."""


def request_id(request: GenerationRequest | ScoreRequest) -> str:
    """Stable id of a request: SHA-256 of its canonical JSON."""
    payload = json.dumps(request.key(), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _response_dict(response: Completion | Scores) -> dict[str, Any]:
    d = dataclasses.asdict(response)
    d.pop("cached", None)
    if "logprobs" in d:
        d["logprobs"] = list(d["logprobs"])
    return d


class RecordingModel:
    """Forwards to ``inner`` and records every request → response in the cassette at ``path``.

    An existing cassette is extended (its entries are kept); a request already recorded is sent again
    and its first recorded response is kept, so the cassette stays a function of the request.
    """

    def __init__(self, inner: Model, path: str | Path) -> None:
        self.inner = inner
        self.path = Path(path)
        self.interactions: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            self.interactions = {i["id"]: i for i in _read(self.path)["interactions"]}

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def capabilities(self) -> Capabilities:
        return self.inner.capabilities

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        responses = self.inner.generate(requests)
        self._record(requests, responses)
        return responses

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        responses = self.inner.score(requests)
        self._record(requests, responses)
        return responses

    def _record(self, requests: Sequence[GenerationRequest | ScoreRequest], responses: Sequence[Any]) -> None:
        for request, response in zip(requests, responses, strict=True):
            rid = request_id(request)
            if rid not in self.interactions:
                self.interactions[rid] = {"id": rid, "request": request.key(), "response": _response_dict(response)}
        self.save()

    def save(self) -> None:
        caps = self.capabilities
        payload = {
            "format": CASSETTE_FORMAT,
            "version": CASSETTE_VERSION,
            "model": self.name,
            "capabilities": {"score": caps.score, "max_context": caps.max_context},
            "interactions": list(self.interactions.values()),
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(payload, indent=1, ensure_ascii=False) + "\n")


class ReplayModel:
    """A model that answers only from the cassette at ``path``; an unseen request raises :class:`CassetteMiss`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        data = _read(self.path)
        self._name: str = data["model"]
        caps = data.get("capabilities", {})
        self._capabilities = Capabilities(score=bool(caps.get("score")), max_context=caps.get("max_context"))
        self.responses: dict[str, dict[str, Any]] = {i["id"]: i["response"] for i in data["interactions"]}
        self.used: set[str] = set()

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        return self._capabilities

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Completion]:
        return [Completion(**self._lookup(r)) for r in requests]

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        out = []
        for r in requests:
            d = self._lookup(r)
            out.append(Scores(**{**d, "logprobs": tuple(d.get("logprobs", ()))}))
        return out

    def _lookup(self, request: GenerationRequest | ScoreRequest) -> dict[str, Any]:
        rid = request_id(request)
        if rid not in self.responses:
            excerpt = " ".join(last_user(request.messages).split())[:160]
            raise CassetteMiss(
                f"{self.path}: no recorded response for request {rid[:12]} ({request.key()['kind']}, "
                f"last user message: {excerpt!r}). The code or inputs changed since recording; "
                "re-record the cassette deliberately if the change is intended."
            )
        self.used.add(rid)
        return dict(self.responses[rid])


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise PromptOptError(f"{path}: cannot read cassette ({exc}).") from None
    if data.get("format") != CASSETTE_FORMAT:
        raise PromptOptError(f"{path}: not a promptopt cassette (format {data.get('format')!r}).")
    return data


__all__ = ["CassetteMiss", "RecordingModel", "ReplayModel", "request_id"]
