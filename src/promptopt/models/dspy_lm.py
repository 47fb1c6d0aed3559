"""Any promptopt model as a ``dspy.LM``, routed through a :class:`~promptopt.models.client.ModelClient`.

``dspy_lm(model_or_client)`` builds ``dspy.LM("promptopt/<model name>", engine=ClientEngine(client), cache=False)``:
DSPy's own response cache is off, so every call DSPy makes is a request to the client — answered from promptopt's
cache (free, counted as a cache hit) or charged to its budget under the client's role. DSPy's engine protocol
(``complete(Request) -> Response``) is used, not the ``BaseLM.forward`` subclass API, which DSPy 3.4 deprecates and
never caches or retries (``../shared/research/feasibility.md`` §f).

A sampled request (temperature > 0) that DSPy repeats (``n`` > 1, bootstrapping rounds) gets the next ``sample``
index each time, so the repeats are distinct cache entries and a rerun in the same order replays them. Run-level
stops raised while DSPy calls the model — :class:`~promptopt.core.exceptions.BudgetExhausted`,
:class:`~promptopt.core.exceptions.TooManyErrors`, or whatever ``before_call`` raises — are carried out of DSPy's
``except Exception`` handlers as :class:`EngineStopped` (a ``BaseException``); the caller re-raises ``.cause``.
"""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from collections.abc import Callable
from typing import Any

from promptopt.core._imports import require
from promptopt.core.exceptions import BackendError
from promptopt.core.messages import Message
from promptopt.models.base import GenerationRequest, Model
from promptopt.models.budget import BudgetTracker
from promptopt.models.client import ModelClient

DSPY_MAX_TOKENS = 64
"""Default cap on one DSPy call's new tokens (DSPy's field markers need ~20 around a short answer)."""


class EngineStopped(BaseException):  # not an Exception: DSPy's `except Exception` handlers must let it through
    """A run-level stop (budget, too many failed calls, a callback) raised inside a DSPy call; ``cause`` is it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


class ClientEngine:
    """DSPy's engine protocol over a :class:`ModelClient`: one ``generate`` request per ``complete``.

    ``max_tokens`` caps every call (a request may ask for fewer, never more). ``before_call`` runs before each
    call (a stop check); what it raises stops DSPy as :class:`EngineStopped`.
    """

    def __init__(
        self, client: ModelClient, *, max_tokens: int = DSPY_MAX_TOKENS, before_call: Callable[[], None] | None = None
    ) -> None:
        self.client, self.max_tokens, self.before_call = client, max_tokens, before_call
        self._seen: Counter[str] = Counter()

    def request(self, request: Any) -> GenerationRequest:
        """The promptopt request for DSPy's ``Request`` (system message, chat turns, decoding settings)."""
        messages = []
        if request.system is not None:
            system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
            messages.append(Message("system", system))
        messages += [Message(str(m.role), m.text or "") for m in request.messages]
        config = request.config
        out = GenerationRequest(
            messages=tuple(messages),
            max_tokens=min(config.max_tokens or self.max_tokens, self.max_tokens),
            temperature=float(config.temperature or 0.0),
            stop=tuple(config.stop or ()),
        )
        if out.temperature > 0:
            key = json.dumps(out.key(), sort_keys=True)
            self._seen[key] += 1
            out = dataclasses.replace(out, sample=self._seen[key])
        return out

    def complete(self, request: Any) -> Any:
        from dspy.lm15 import Message as DMessage
        from dspy.lm15 import Response, TextPart, Usage

        gen = self.request(request)
        try:
            if self.before_call is not None:
                self.before_call()
            answer = self.client.generate([gen])[0]
        except Exception as exc:  # BudgetExhausted, TooManyErrors, StopRun: end the compile, not one call
            raise EngineStopped(exc) from exc
        if answer.error:
            raise BackendError(f"{self.client.describe_model()}: {answer.error}")
        n_in, n_out = answer.prompt_tokens, answer.completion_tokens
        return Response(
            id=None,
            model=self.client.model.name,
            message=DMessage.assistant([TextPart(answer.text)]),
            finish_reason="length" if n_out >= gen.max_tokens else "stop",
            usage=Usage(input_tokens=n_in, output_tokens=n_out, total_tokens=n_in + n_out),
        )

    def stream(self, request: Any) -> Any:
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self) -> None:
        """Nothing to close: the client's model is borrowed."""

    def __deepcopy__(self, memo: dict[int, Any]) -> ClientEngine:
        return self  # DSPy copies LMs and programs; the copies share the client and the sample counters


def dspy_lm(
    model: Model | ModelClient,
    *,
    max_tokens: int = DSPY_MAX_TOKENS,
    before_call: Callable[[], None] | None = None,
    role: str = "task",
) -> Any:
    """A ``dspy.LM`` whose calls go through ``model``'s client (a :class:`Model` gets a client of its own: no
    cache, an unlimited budget, ``role``), with DSPy's cache and retries off (promptopt's cache and backends do
    both). Needs the ``dspy`` extra."""
    dspy = require("dspy", extra="dspy", feature="DSPy interop")
    client = (
        model if isinstance(model, ModelClient) else ModelClient(model, cache=None, budget=BudgetTracker(), role=role)
    )
    engine = ClientEngine(client, max_tokens=max_tokens, before_call=before_call)
    return dspy.LM(f"promptopt/{client.model.name}", engine=engine, cache=False, num_retries=0, max_tokens=max_tokens)
