"""ModelClient: the one path to a model — cache first, then budget, then the backend.

Every optimizer, the evaluator and the proposer go through a client, so caching, budget accounting and the
failed-call limit (``BudgetTracker.max_errors``) are identical everywhere.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar, cast

from promptopt.core.exceptions import BudgetExhausted, ConfigError
from promptopt.models.base import Completion, GenerationRequest, Model, ScoreRequest, Scores, StreamingModel
from promptopt.models.budget import BudgetTracker, Usage
from promptopt.models.cache import ResponseCache, request_key

logger = logging.getLogger(__name__)

TOO_LONG = ("the context holds", "ContextWindowExceededError", "maximum context length")
"""How backends say a request does not fit the model's context (hf; litellm and OpenAI-style APIs). Such a failure
is the prompt's (it fails the same way every time), not an outage: it does not count toward ``max_errors``."""

R = TypeVar("R", Completion, Scores)


class ModelClient:
    """A model with a shared cache and budget, acting for one ``role`` (``task``, ``proposer``, ``report``)."""

    def __init__(
        self,
        model: Model,
        *,
        cache: ResponseCache | None,
        budget: BudgetTracker,
        role: str = "task",
        batch_size: int = 32,
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"must be >= 1, got {batch_size}.", field="batch_size")
        self.model = model
        self.cache = cache
        self.budget = budget
        self.role = role
        self.batch_size = batch_size

    def describe_model(self) -> str:
        """The model for error messages: its own repr where it has one (a remote model's shows the endpoint)."""
        return repr(self.model) if type(self.model).__repr__ is not object.__repr__ else f"model {self.model.name}"

    def with_role(self, role: str) -> ModelClient:
        return ModelClient(self.model, cache=self.cache, budget=self.budget, role=role, batch_size=self.batch_size)

    def generate(
        self, requests: Sequence[GenerationRequest], *, on_done: Callable[[int], None] | None = None
    ) -> list[Completion]:
        return self._run(requests, self.model.generate, Completion, on_done)

    def score(self, requests: Sequence[ScoreRequest], *, on_done: Callable[[int], None] | None = None) -> list[Scores]:
        return self._run(requests, self.model.score, Scores, on_done)

    def _run(
        self,
        requests: Sequence[Any],
        call: Callable[[Sequence[Any]], Sequence[R]],
        kind: type[R],
        on_done: Callable[[int], None] | None,
    ) -> list[R]:
        """Answer from the cache where possible; send misses in batches within the budget.

        A miss is claimed first (:meth:`ResponseCache.claim`): one that another worker sharing the cache is
        answering is waited for, not paid again. Raises BudgetExhausted after caching whatever was answered.
        """
        keys = [request_key(self.model.name, r.key()) for r in requests]
        self.budget.note_requests(self.role, keys, cached=self.cache is not None)
        hits = self.cache.get_many(set(keys)) if self.cache is not None else {}
        out: list[R | None] = [None] * len(requests)
        misses: list[int] = []
        first_of: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k in hits or k in first_of:  # a hit, or a duplicate inside this batch: answered once
                continue
            first_of[k] = i
            misses.append(i)
        self._hits(keys, out, range(len(keys)), hits, kind, on_done)
        while misses:  # claim the misses; answer ours, then wait for those another worker is answering
            claimed, found = self.cache.claim(keys[i] for i in misses) if self.cache is not None else (None, {})
            self._hits(keys, out, misses, found, kind, on_done)
            mine = [i for i in misses if claimed is None or keys[i] in claimed]
            try:
                self._send(requests, keys, out, mine, call, kind, on_done)
            finally:
                if self.cache is not None:
                    self.cache.release(keys[i] for i in mine)
            ours = set(mine)
            theirs = [i for i in misses if out[i] is None and i not in ours]
            if theirs and self.cache is not None:
                self._hits(keys, out, theirs, self.cache.wait(keys[i] for i in theirs), kind, on_done)
            misses = [i for i in theirs if out[i] is None]  # released unanswered: claim them again
        answers: list[R] = []
        for i, k in enumerate(keys):  # in-batch duplicates (still None) take the answer of their first request
            r = out[i]
            answers.append(r if r is not None else dataclasses.replace(answers[first_of[k]], cached=True))
        return answers

    def _hits(
        self,
        keys: Sequence[str],
        out: list[Any],
        indices: Iterable[int],
        found: Mapping[str, Mapping[str, Any]],
        kind: type[R],
        on_done: Callable[[int], None] | None,
    ) -> None:
        """Fill ``out`` at ``indices`` from cached answers ``found`` and charge them as cache hits."""
        n = 0
        for i in indices:
            if out[i] is None and keys[i] in found:
                out[i] = kind(**found[keys[i]], cached=True)
                n += 1
        if n:
            self.budget.charge(self.role, Usage(cache_hits=n))
            if on_done:
                on_done(n)

    def _send(
        self,
        requests: Sequence[Any],
        keys: Sequence[str],
        out: list[Any],
        misses: Sequence[int],
        call: Callable[[Sequence[Any]], Sequence[R]],
        kind: type[R],
        on_done: Callable[[int], None] | None,
    ) -> None:
        """Send the requests at ``misses`` in batches within the budget; cache and charge the answers.

        Raises BudgetExhausted after caching whatever was answered, so finished work is never lost.
        """
        for start in range(0, len(misses), self.batch_size):
            chunk = misses[start : start + self.batch_size]
            allowed = self.budget.allow(self.role, len(chunk))
            sent: list[int] = list(chunk[:allowed])
            batch = [requests[i] for i in sent]
            if kind is Completion and self.model.capabilities.streams_results:
                # each answer is cached and charged as it arrives: a crash mid-batch loses none of them
                def keep(j: int, resp: Completion, sent: list[int] = sent) -> None:
                    self._keep(keys, out, [(sent[j], resp)])

                # the capability says the backend's generate takes on_result
                cast(StreamingModel, self.model).generate(batch, on_result=keep)
            else:
                self._keep(keys, out, list(zip(sent, call(batch), strict=True)))
            # after caching and charging: the answered calls are kept
            failed = [r.error for i in sent if (r := out[i]) and r.error and not any(m in r.error for m in TOO_LONG)]
            last = failed[-1] if failed else None
            self.budget.count_failures(len(sent), len(failed), last, model=self.describe_model())
            if on_done:
                on_done(len(sent))
            if len(sent) < len(chunk):
                raise BudgetExhausted(self.budget.exhausted_reason() or "call budget spent")

    def _keep(self, keys: Sequence[str], out: list[Any], answered: Sequence[tuple[int, Completion | Scores]]) -> None:
        """Put answers (request index, response) in ``out``, cache the good ones and charge them all."""
        usage = Usage(calls=len(answered))
        fresh: dict[str, dict[str, Any]] = {}
        for i, resp in answered:
            out[i] = resp
            usage.prompt_tokens += resp.prompt_tokens
            usage.completion_tokens += getattr(resp, "completion_tokens", 0)
            usage.cost += resp.cost
            if resp.error:
                usage.errors += 1
                logger.debug("model error on request %d: %s", i, resp.error)
            else:
                d = dataclasses.asdict(resp)
                d.pop("cached")
                fresh[keys[i]] = d
        if self.cache is not None:
            self.cache.put_many(fresh)
        self.budget.charge(self.role, usage)
