"""Several endpoints of one model: load balancing, failover and cool-down (what litellm's Router does, for our
own retry loop).

:class:`EndpointPool` hands each attempt of a request the available endpoint with the fewest requests in flight
(ties in turn), so load spreads over the healthy endpoints. ``allowed_fails`` retryable failures in a row (429,
5xx, timeouts, connection errors) cool an endpoint down for ``cooldown`` seconds: it gets no requests meanwhile
unless every endpoint is cooling down, and one success resets its count. A retry goes to another endpoint
at once when one is available (failover), otherwise it waits the caller's backoff. Each endpoint paces its own
requests (its ``rpm`` / ``tpm`` buckets), so rate limits are kept per endpoint.

litellm's ``Router`` is not used because it brings its own retries, cool-downs and rate accounting, which would
stack on :class:`~promptopt.models.litellm.LiteLLMModel`'s, and label scoring does not go through litellm.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any


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


def forget_buckets() -> None:
    """Drop every shared bucket (in a forked child: their asyncio locks belonged to the parent's loop)."""
    global _buckets_lock
    _buckets_lock = threading.Lock()
    _buckets.clear()


def shared_bucket(model: str, api_base: str | None, kind: str, rate: float) -> TokenBucket:
    """The bucket shared by every client of ``model`` at ``api_base`` with this limit."""
    with _buckets_lock:
        key = (model, api_base, kind, rate)
        if key not in _buckets:
            _buckets[key] = TokenBucket(rate)
        return _buckets[key]


@dataclass(eq=False)
class Endpoint:
    """One API base with its own rate limits and health."""

    api_base: str | None
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    in_flight: int = 0
    fails: int = 0
    cooldown_until: float = 0.0

    async def pace(self, tokens: int) -> None:
        """Wait for this endpoint's request and token rate limits (every attempt counts against them)."""
        if self.rpm is not None:
            await self.rpm.acquire()
        if self.tpm is not None:
            await self.tpm.acquire(tokens)


class EndpointPool:
    """Picks the endpoint for each attempt and tracks their health (see the module docstring)."""

    def __init__(
        self,
        endpoints: Sequence[Endpoint],
        *,
        allowed_fails: int = 3,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not endpoints:
            raise ValueError("an endpoint pool needs at least one endpoint")
        self.endpoints = list(endpoints)
        self.allowed_fails = allowed_fails
        self.cooldown = cooldown
        self._clock = clock
        self._turn = 0

    def available(self) -> list[Endpoint]:
        """Endpoints not cooling down (all of them, soonest back first, when every one is)."""
        now = self._clock()
        ready = [e for e in self.endpoints if e.cooldown_until <= now]
        return ready or sorted(self.endpoints, key=lambda e: e.cooldown_until)[:1]

    def pick(self) -> Endpoint:
        """The available endpoint with the fewest requests in flight (ties in turn); counts the attempt."""
        ready = self.available()
        self._turn += 1
        endpoint = min(ready, key=lambda e: (e.in_flight, (self.endpoints.index(e) - self._turn) % len(self.endpoints)))
        endpoint.in_flight += 1
        return endpoint

    def done(self, endpoint: Endpoint, failure: BaseException | None, retryable: bool) -> bool:
        """Record an attempt's outcome; True when a retry can go to another available endpoint at once."""
        self.release(endpoint)
        if failure is None:
            endpoint.fails = 0
            return False
        if retryable:
            endpoint.fails += 1
            if endpoint.fails >= self.allowed_fails:
                endpoint.cooldown_until = self._clock() + self.cooldown
                endpoint.fails = 0
        now = self._clock()
        return any(e is not endpoint and e.cooldown_until <= now for e in self.endpoints)

    def release(self, endpoint: Endpoint) -> None:
        """An attempt on ``endpoint`` ended (:meth:`done` calls it; alone for a cancelled attempt)."""
        endpoint.in_flight -= 1

    def describe(self) -> str:
        """The endpoints for messages (``api_base`` values, or the provider's default)."""
        return ", ".join(e.api_base or "default endpoint" for e in self.endpoints)


def api_bases(value: str | Sequence[str] | None) -> list[str | None]:
    """``api_base`` as given (one URL, a list of URLs, or None for the provider's default) as a list."""
    if value is None or isinstance(value, str):
        return [value]
    bases: list[Any] = list(value)
    if not bases or not all(isinstance(b, str) and b for b in bases):
        raise ValueError(f"api_base must be a URL or a non-empty list of URLs, got {value!r}")
    return bases
