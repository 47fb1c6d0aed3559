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
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from promptopt.core._imports import require
from promptopt.core.exceptions import ConfigError
from promptopt.models.base import Capabilities, Completion, GenerationRequest, ScoreRequest, Scores

_RESERVED = frozenset(
    {"model", "messages", "max_tokens", "temperature", "stop", "seed", "timeout", "api_base", "api_key",
     "max_retries", "num_retries", "stream", "n"}
)  # fmt: skip
_MAX_DELAY = 60.0
_LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")

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
    global _loop, _loop_lock, _buckets_lock
    _loop, _loop_lock = None, threading.Lock()
    _buckets_lock = threading.Lock()
    _buckets.clear()  # their asyncio locks belonged to the parent's loop


if hasattr(os, "register_at_fork"):  # not on Windows
    os.register_at_fork(after_in_child=_forget_loop)


class TokenBucket:
    """Async token bucket: ``rate_per_minute`` tokens per minute, holding at most ``capacity`` (default: one
    second's worth, at least 1). Waiters are served in arrival order; a request for more than the capacity
    waits for a full bucket and leaves it in debt."""

    def __init__(
        self,
        rate_per_minute: float,
        *,
        capacity: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate_per_minute <= 0:
            raise ValueError(f"rate must be > 0 per minute, got {rate_per_minute}")
        self.rate = rate_per_minute / 60.0  # per second
        self.capacity = capacity if capacity is not None else max(1.0, self.rate)
        self._clock, self._sleep = clock, sleep
        self._tokens = self.capacity
        self._stamp = clock()
        self._lock: asyncio.Lock | None = None

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    async def acquire(self, amount: float = 1.0) -> None:
        """Wait until ``amount`` tokens are available and take them."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            need = min(amount, self.capacity)
            self._refill()
            while self._tokens < need:
                await self._sleep((need - self._tokens) / self.rate)
                self._refill()
            self._tokens -= amount

    def adjust(self, amount: float) -> None:
        """Give back (positive) or take (negative) tokens after the fact, e.g. when usage is known."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + amount)


_buckets: dict[tuple[str, str | None, str, float], TokenBucket] = {}
_buckets_lock = threading.Lock()


def _bucket(model: str, api_base: str | None, kind: str, rate: float) -> TokenBucket:
    """The bucket shared by every LiteLLMModel of ``model`` at ``api_base`` with this limit."""
    with _buckets_lock:
        key = (model, api_base, kind, rate)
        if key not in _buckets:
            _buckets[key] = TokenBucket(rate)
        return _buckets[key]


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
    """A chat model reached through litellm; cannot score continuations.

    ``max_concurrency`` bounds the requests in flight per :meth:`generate` call; ``rpm`` and ``tpm``
    (requests / tokens per minute, None: unlimited) pace them for every instance of this model and
    endpoint. ``timeout`` is per attempt, in seconds; ``max_retries`` counts retries after the first
    attempt and ``backoff`` is the first retry delay (doubled each time, with jitter). ``extra`` holds
    further ``litellm.acompletion`` arguments (e.g. ``top_p``, ``extra_headers``). ``api_base`` and
    ``api_key`` are not part of :attr:`name` and the key is never logged.
    """

    def __init__(
        self,
        model: str,
        *,
        api_base: str | None = None,
        api_key: str | None = None,
        max_concurrency: int = 8,
        max_retries: int = 4,
        timeout: float = 60.0,
        backoff: float = 1.0,
        rpm: float | None = None,
        tpm: float | None = None,
        extra: Mapping[str, Any] | None = None,
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
        reserved = sorted(_RESERVED.intersection(extra or {}))
        if reserved:
            raise ConfigError(
                f"extra may not set {', '.join(reserved)}; use the LiteLLMModel arguments or the request",
                field="extra",
            )
        litellm = _load_litellm()
        try:
            litellm.get_llm_provider(model, api_base=api_base)
        except Exception as exc:
            raise ConfigError(
                f"litellm cannot route model spec 'litellm:{model}' (no known provider). Write it as "
                "'litellm:<provider>/<model>', e.g. 'litellm:openai/gpt-4o-mini', or "
                "'litellm:openai/<model>' / 'litellm:hosted_vllm/<model>' with api_base=... for an "
                "OpenAI-compatible server.",
                field="model",
            ) from exc
        _check_credentials(litellm, model, api_key, api_base)
        try:
            info = litellm.get_model_info(model)
        except Exception:  # not in litellm's price map: cost 0.0, context unknown
            info = None
        self._model = model
        self._priced = info is not None
        self._max_context = info.get("max_input_tokens") if info else None
        self._api_base = api_base
        self._api_key = api_key
        self._max_concurrency = max_concurrency
        self._max_retries = max_retries
        self._timeout = timeout
        self._backoff = backoff
        self._extra = dict(extra or {})
        self._random = random.Random()
        self._rpm = _bucket(model, api_base, "requests", rpm) if rpm is not None else None
        self._tpm = _bucket(model, api_base, "tokens", tpm) if tpm is not None else None

    def __repr__(self) -> str:
        base = f", api_base={self._api_base!r}" if self._api_base else ""
        return f"LiteLLMModel({self._model!r}{base})"

    @property
    def name(self) -> str:
        return f"litellm:{self._model}"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(score=False, max_context=self._max_context, streams_results=True)

    def generate(
        self, requests: Sequence[GenerationRequest], *, on_result: Callable[[int, Completion], None] | None = None
    ) -> list[Completion]:
        """Complete every request concurrently; the results are in request order.

        ``on_result(index, completion)`` is called as each request finishes (on the backend's event-loop thread,
        one call at a time), before the batch is done.
        """
        if not requests:
            return []
        future = asyncio.run_coroutine_threadsafe(self._generate_all(requests, on_result), _background_loop())
        try:
            return future.result()
        except BaseException:  # e.g. KeyboardInterrupt: stop the batch instead of leaving it running
            future.cancel()
            raise

    def score(self, requests: Sequence[ScoreRequest]) -> list[Scores]:
        raise NotImplementedError(
            f"{self.name} cannot score continuations: litellm chat APIs do not return the log-likelihood of "
            "a given reply. Use a generation-based metric, or an in-process model (smollm2, hf:...)."
        )

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
        attempt = 0
        while True:
            try:
                async with semaphore:
                    await self._pace(estimate)
                    # litellm enforces ``timeout``; wait_for is a backstop for providers that ignore it.
                    response = await asyncio.wait_for(_load_litellm().acompletion(**kwargs), self._timeout + 5)
            except Exception as exc:
                if attempt >= self._max_retries or not _retryable(exc):
                    return Completion(error=self._describe(exc, attempt + 1))
                await asyncio.sleep(self._retry_delay(attempt, exc))  # semaphore released meanwhile
                attempt += 1
                continue
            completion = self._completion(response, request)
            if self._tpm is not None and completion.prompt_tokens + completion.completion_tokens:
                self._tpm.adjust(estimate - completion.prompt_tokens - completion.completion_tokens)
            return completion

    def _retry_delay(self, attempt: int, exc: BaseException) -> float:
        """Seconds before retry ``attempt + 1``: exponential backoff with jitter, at least what the provider's
        Retry-After asks (both capped at a minute)."""
        delay = min(self._backoff * 2**attempt, _MAX_DELAY)
        return max(self._random.uniform(delay / 2, delay), min(_retry_after(exc), _MAX_DELAY))

    async def _pace(self, tokens: int) -> None:
        """Wait for the request and token rate limits (every attempt counts against them)."""
        if self._rpm is not None:
            await self._rpm.acquire()
        if self._tpm is not None:
            await self._tpm.acquire(tokens)

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
        if self._api_base is not None:
            kwargs["api_base"] = self._api_base
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
