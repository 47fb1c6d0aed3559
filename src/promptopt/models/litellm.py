"""Any litellm provider as a promptopt backend (spec ``litellm:<provider/model>``).

Batches run concurrently on one background asyncio loop shared by all instances (so ``generate`` also
works when the caller already runs an event loop, e.g. in Jupyter, and litellm's clients are reused).
Rate limits, server errors, timeouts, connection errors and malformed answers are retried with exponential
backoff and jitter (waiting at least what a 429's ``Retry-After`` asks, up to a minute), at most ``max_retries``
times; a request that still fails comes back as a :class:`Completion` with ``error`` set. ``generate`` can report
each answer the moment it arrives (``on_result``), so a caller can cache it before the rest of the batch is done.

``rpm`` / ``tpm`` pace requests with token buckets shared by every instance for the same model and
endpoint (so two clients of one model cannot together exceed its limit): each bucket holds one second's
worth of its rate, so requests go out smoothly instead of in bursts that the provider would answer with
429s. A request's tokens are estimated before it is sent (prompt characters / 4 + ``max_tokens``) and
corrected with the usage the provider reports.

``api_base`` may be a list: the endpoints share the load, a failing one is cooled down and its requests fail
over to the others, and each keeps its own rate limits (:mod:`.endpoints`). Given the served model's
``tokenizer``, the model can score labels through the server's ``/v1/completions`` (:mod:`.litellm_score`); a
server that cannot is detected once and the run falls back to generation with a one-line notice.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import sys
import threading
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from types import ModuleType
from typing import Any, TypeVar

from promptopt.core._imports import require
from promptopt.core.exceptions import ConfigError
from promptopt.models.base import Capabilities, Completion, GenerationRequest, ScoreRequest, Scores
from promptopt.models.endpoints import Endpoint, EndpointPool, api_bases, forget_buckets, shared_bucket
from promptopt.models.litellm_score import ChatRenderer, http_client, post_json, score_all

_RESERVED = frozenset(
    {"model", "messages", "max_tokens", "temperature", "stop", "seed", "timeout", "api_base", "api_key",
     "max_retries", "num_retries", "stream", "n"}
)  # fmt: skip
_MAX_DELAY = 60.0
_LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")

T = TypeVar("T")
_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


@functools.cache
def _load_litellm() -> ModuleType:
    """Import litellm without its network cost-map lookup, debug prints and warning chatter."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    litellm: Any = require("litellm", extra="litellm", feature="LiteLLMModel")  # Any: sets a module attribute
    litellm.suppress_debug_info = True
    for name in _LITELLM_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:  # leave a level the user chose alone
            logger.setLevel(logging.ERROR)
    return litellm


def _background_loop() -> asyncio.AbstractEventLoop:
    """The event loop (on a daemon thread) that runs every LiteLLMModel batch."""
    global _loop
    with _loop_lock:
        if _loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="promptopt-litellm", daemon=True).start()
            _loop = loop
        return _loop


def _forget_loop() -> None:
    """In a forked child the loop's thread does not exist: start a new one when needed."""
    global _loop, _loop_lock
    _loop, _loop_lock = None, threading.Lock()
    forget_buckets()  # their asyncio locks belonged to the parent's loop


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_loop)


def _estimate_tokens(request: GenerationRequest) -> int:
    return sum(len(m.content) for m in request.messages) // 4 + request.max_tokens


def _status(exc: BaseException) -> int | None:
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def _retry_after(exc: BaseException) -> float:
    """Seconds a rate-limited answer asked to wait (``retry-after-ms`` or ``Retry-After``), 0.0 if none."""
    headers = getattr(exc, "litellm_response_headers", None) or getattr(getattr(exc, "response", None), "headers", {})
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:  # absent
            continue
        try:
            return max(0.0, float(value) * scale)
        except (TypeError, ValueError):  # an HTTP date: fall back to our backoff
            continue
    return 0.0


def _retryable(exc: BaseException) -> bool:
    """Rate limits, 5xx, timeouts and connection errors; not auth or bad-request errors."""
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError, ConnectionError)):
        return True
    status = _status(exc)
    return status is not None and (status in (408, 409, 429) or status >= 500)


def _truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return text if cut < 0 else text[:cut]


def _check_credentials(litellm: ModuleType, model: str, api_key: str | None, api_base: str | None) -> None:
    """Fail at construction, not after every retry, when the provider's API key is neither given nor set."""
    if api_key is not None or litellm.api_key is not None:
        return
    try:
        env = litellm.validate_environment(model, api_base=api_base)
    except Exception:  # litellm cannot tell; requests will report it
        return
    missing = [k for k in env.get("missing_keys", []) if k.endswith("_API_KEY")]
    if missing:
        raise ConfigError(
            f"'litellm:{model}' needs an API key: set {' or '.join(missing)} or pass api_key=... "
            "(for a local server without authentication, any value, e.g. api_key='none').",
            field="api_key",
        )


class LiteLLMModel:
    """A chat model reached through litellm; scores labels over ``/v1/completions`` when given ``tokenizer``.

    ``max_concurrency`` bounds the requests in flight per :meth:`generate` call; ``rpm`` and ``tpm``
    (requests / tokens per minute, None: unlimited) pace them for every instance of this model and
    endpoint. ``timeout`` is per attempt, in seconds; ``max_retries`` counts retries after the first
    attempt and ``backoff`` is the first retry delay (doubled each time, with jitter). ``extra`` holds
    further ``litellm.acompletion`` arguments (e.g. ``top_p``, ``extra_headers``). ``api_base`` and
    ``api_key`` are not part of :attr:`name` (so cached answers do not depend on the endpoint that gave them) and
    the key is never logged. ``api_base`` may list several endpoints (``allowed_fails`` failures in a row cool one
    down for ``cooldown`` seconds). ``tokenizer`` (path or hub id of the served model's tokenizer) enables label
    scoring, ``score_batch`` prompts (request × label) per completions request.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | Sequence[str] | None = None,
        api_key: str | None = None,
        max_concurrency: int = 8,
        max_retries: int = 4,
        timeout: float = 60.0,
        backoff: float = 1.0,
        rpm: float | None = None,
        tpm: float | None = None,
        extra: Mapping[str, Any] | None = None,
        tokenizer: str | None = None,
        score_batch: int = 64,
        allowed_fails: int = 3,
        cooldown: float = 30.0,
    ) -> None:
        for limit, label in ((rpm, "rpm"), (tpm, "tpm")):
            if limit is not None and limit <= 0:
                raise ConfigError(f"{label} must be > 0 per minute (or None: no limit), got {limit}", field=label)
        if max_concurrency < 1:
            raise ConfigError(f"max_concurrency must be >= 1, got {max_concurrency}", field="max_concurrency")
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}", field="max_retries")
        if timeout <= 0:
            raise ConfigError(f"timeout must be > 0 seconds, got {timeout}", field="timeout")
        if backoff < 0:
            raise ConfigError(f"backoff must be >= 0 seconds, got {backoff}", field="backoff")
        for count, label in ((score_batch, "score_batch"), (allowed_fails, "allowed_fails")):
            if count < 1:
                raise ConfigError(f"{label} must be >= 1, got {count}", field=label)
        if cooldown < 0:
            raise ConfigError(f"cooldown must be >= 0 seconds, got {cooldown}", field="cooldown")
        try:
            bases = api_bases(api_base)
        except ValueError as exc:
            raise ConfigError(str(exc), field="api_base") from None
        reserved = sorted(_RESERVED.intersection(extra or {}))
        if reserved:
            raise ConfigError(
                f"extra may not set {', '.join(reserved)}; use the LiteLLMModel arguments or the request",
                field="extra",
            )
        litellm = _load_litellm()
        try:
            served, _, env_key, _ = litellm.get_llm_provider(model, api_base=bases[0])
        except Exception as exc:
            raise ConfigError(
                f"litellm cannot route model spec 'litellm:{model}' (no known provider). Write it as "
                "'litellm:<provider>/<model>', e.g. 'litellm:openai/gpt-4o-mini', or "
                "'litellm:openai/<model>' / 'litellm:hosted_vllm/<model>' with api_base=... for an "
                "OpenAI-compatible server.",
                field="model",
            ) from exc
        _check_credentials(litellm, model, api_key, bases[0])
        try:
            info = litellm.get_model_info(model)
        except Exception:  # not in litellm's price map: cost 0.0, context unknown
            info = None
        self._model = model
        self._priced = info is not None
        self._max_context = info.get("max_input_tokens") if info else None
        self._served = served  # the model name the server knows (no provider prefix)
        self._api_key = api_key
        self._score_key = api_key or env_key or os.environ.get("OPENAI_API_KEY")
        self._max_concurrency = max_concurrency
        self._max_retries = max_retries
        self._timeout = timeout
        self._backoff = backoff
        self._extra = dict(extra or {})
        self._random = random.Random()
        self._pool = EndpointPool(
            [
                Endpoint(
                    base,
                    rpm=shared_bucket(model, base, "requests", rpm) if rpm is not None else None,
                    tpm=shared_bucket(model, base, "tokens", tpm) if tpm is not None else None,
                )
                for base in bases
            ],
            allowed_fails=allowed_fails,
            cooldown=cooldown,
        )
        self._renderer = ChatRenderer(tokenizer) if tokenizer is not None else None
        self._score_batch = score_batch
        self._can_score: bool | None = None if tokenizer is not None else False

    def __repr__(self) -> str:
        bases = [e.api_base for e in self._pool.endpoints]
        base = f", api_base={bases[0] if len(bases) == 1 else bases!r}" if bases != [None] else ""
        return f"LiteLLMModel({self._model!r}{base})"

    @property
    def name(self) -> str:
        return f"litellm:{self._model}"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(score=self._scores_labels(), max_context=self._max_context, streams_results=True)

    def generate(
        self, requests: Sequence[GenerationRequest], *, on_result: Callable[[int, Completion], None] | None = None
    ) -> list[Completion]:
        """Complete every request concurrently; the results are in request order.

        ``on_result(index, completion)`` is called as each request finishes (on the backend's event-loop thread,
        one call at a time), before the batch is done.
        """
        if not requests:
            return []
        return self._run(self._generate_all(requests, on_result))

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        """Log-likelihood of each label as the reply, from the server's ``/v1/completions`` (needs ``tokenizer``)."""
        if self._renderer is None or not self._scores_labels():
            raise NotImplementedError(
                f"{self.name} cannot score continuations: chat APIs do not return the log-likelihood of a given "
                "reply. Pass the served model's tokenizer=... to score labels through an OpenAI-compatible "
                "server's /v1/completions, use a generation-based metric, or an in-process model (smollm2, hf:...)."
            )
        if not requests:
            return []
        prompts = [self._renderer.render(r.messages) for r in requests]
        return self._run(self._score_all(requests, prompts, self._score_batch))

    async def _score_all(self, requests: Sequence[ScoreRequest], prompts: list[str], batch: int) -> list[Scores]:
        semaphore = asyncio.Semaphore(self._max_concurrency)  # bounds the completions requests in flight

        async def attempts(send: Callable[[Endpoint], Awaitable[Any]], tokens: int) -> tuple[Any, str | None]:
            return await self._attempts(send, tokens, semaphore)

        async with http_client(self._timeout) as http:  # one connection pool for the batch

            async def post(api_base: str | None, body: dict[str, Any]) -> dict[str, Any]:
                return await post_json(http, api_base, body, api_key=self._score_key)

            return await score_all(requests, prompts, attempts=attempts, post=post, model=self._served,
                                   score_batch=batch)  # fmt: skip

    def _scores_labels(self) -> bool:
        """Whether label scoring works here: probed once (one echoed prompt) the first time it is asked."""
        if self._can_score is None:
            probe = ScoreRequest(messages=(), continuations=("ok",))
            (result,) = self._run(self._score_all([probe], ["Hello"], 1))
            self._can_score = result.error is None
            if result.error is not None:
                print(f"{self._pool.describe()} cannot score labels ({result.error}); generating instead",
                      file=sys.stderr, flush=True)  # fmt: skip
        return self._can_score

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run ``coroutine`` on the background loop and wait for it (cancelled if the wait is interrupted)."""
        future = asyncio.run_coroutine_threadsafe(coroutine, _background_loop())
        try:
            return future.result()
        except BaseException:  # e.g. KeyboardInterrupt: stop the batch instead of leaving it running
            future.cancel()
            raise

    async def _generate_all(
        self, requests: Sequence[GenerationRequest], on_result: Callable[[int, Completion], None] | None
    ) -> list[Completion]:
        semaphore = asyncio.Semaphore(self._max_concurrency)

        async def one(index: int, request: GenerationRequest) -> Completion:
            completion = await self._generate_one(request, semaphore)
            if on_result is not None:
                on_result(index, completion)
            return completion

        return list(await asyncio.gather(*(one(i, r) for i, r in enumerate(requests))))

    async def _generate_one(self, request: GenerationRequest, semaphore: asyncio.Semaphore) -> Completion:
        kwargs = self._call_kwargs(request)
        estimate = _estimate_tokens(request)

        async def send(endpoint: Endpoint) -> Completion:
            base = {"api_base": endpoint.api_base} if endpoint.api_base is not None else {}
            response = await _load_litellm().acompletion(**kwargs, **base)
            completion = self._completion(response, request)
            if endpoint.tpm is not None and completion.prompt_tokens + completion.completion_tokens:
                endpoint.tpm.adjust(estimate - completion.prompt_tokens - completion.completion_tokens)
            return completion

        completion, error = await self._attempts(send, estimate, semaphore)
        return completion if completion is not None else Completion(error=error)

    async def _attempts(
        self, send: Callable[[Endpoint], Awaitable[T]], tokens: int, semaphore: asyncio.Semaphore
    ) -> tuple[T | None, str | None]:
        """``send(endpoint)`` with retries (each attempt on the endpoint the pool picks, paced by its limits, at most
        ``semaphore``'s count at once): (result, None), or (None, the last error described)."""
        attempt = 0
        while True:
            async with semaphore:
                endpoint = self._pool.pick()
                try:
                    await endpoint.pace(tokens)
                    # litellm enforces ``timeout``; wait_for is a backstop for providers that ignore it.
                    result = await asyncio.wait_for(send(endpoint), self._timeout + 5)
                except Exception as exc:
                    failure: Exception | None = exc
                except BaseException:  # cancelled: the attempt ends, telling nothing about the endpoint
                    self._pool.release(endpoint)
                    raise
                else:
                    failure = None
                failover = self._pool.done(endpoint, failure, failure is not None and _retryable(failure))
            if failure is None:
                return result, None
            if attempt >= self._max_retries or not _retryable(failure):
                return None, self._describe(failure, attempt + 1)
            if not failover:  # no other endpoint to try at once: back off (semaphore released meanwhile)
                await asyncio.sleep(self._retry_delay(attempt, failure))
            attempt += 1

    def _retry_delay(self, attempt: int, exc: BaseException) -> float:
        """Seconds before retry ``attempt + 1``: exponential backoff with jitter, at least what the provider's
        Retry-After asks (both capped at a minute)."""
        delay = min(self._backoff * 2**attempt, _MAX_DELAY)
        return max(self._random.uniform(delay / 2, delay), min(_retry_after(exc), _MAX_DELAY))

    def _call_kwargs(self, request: GenerationRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"drop_params": True, **self._extra}  # drop what a provider cannot take
        kwargs.update(
            model=self._model,
            messages=[m.to_dict() for m in request.messages],
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            timeout=self._timeout,
            max_retries=0,  # retries are ours (the OpenAI client would retry too)
        )
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.temperature > 0:
            kwargs["seed"] = request.sample
        if self._api_key is not None:
            kwargs["api_key"] = self._api_key
        return kwargs

    def _completion(self, response: Any, request: GenerationRequest) -> Completion:
        text = (response.choices[0].message.content or "") if response.choices else ""
        usage = getattr(response, "usage", None)
        cost = 0.0
        if self._priced:
            try:
                cost = float(_load_litellm().completion_cost(completion_response=response) or 0.0)
            except Exception:  # a price-map gap must not fail a good answer
                cost = 0.0
        return Completion(
            text=_truncate_at_stop(text, request.stop),  # some providers ignore or drop ``stop``
            prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
            completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
            cost=cost,
        )

    def _describe(self, exc: BaseException, attempts: int) -> str:
        """One line: error class, status, attempts and the provider's message (without the key)."""
        kind = type(exc).__name__
        message = (str(exc).strip().splitlines() or [""])[0]
        for prefix in (f"litellm.{kind}: ", f"{kind}: "):
            message = message.removeprefix(prefix)
        if self._api_key:
            message = message.replace(self._api_key, "***")
        if len(message) > 200:
            message = message[:197] + "..."
        status = _status(exc)
        where = f" (status {status})" if status is not None else ""
        tries = f" after {attempts} attempts" if attempts > 1 else ""
        return f"{kind}{where}{tries}: {message or 'no message'}"
