"""Budget accounting shared by every model call of a run: calls, tokens, cost and wall time.

A *call* is one request that reached a model (one generation, one example's label scoring, or one
training example's forward and backward pass for a soft prompt, role ``train``); cache hits are free
and counted apart. Limits are hard stops: the call limit is exact (a batch is cut to what
is left); token and cost limits stop the run at the first batch that reaches them (they cannot be
known before a call returns), and the time limit is checked before every batch.

Optimizers *plan* with :meth:`BudgetTracker.planned_left`: the call limit minus every distinct request the run
has made, cache hits included — what the run would have paid with a cold cache. Unlike the calls actually paid
it does not depend on what the cache held, so a resumed run, replayed from the cache, makes the same plans,
and it never undercounts, so what a plan reserves (e.g. confirming the best candidates on full dev) is there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from promptopt.core._files import write_text_atomic
from promptopt.core.exceptions import BudgetExhausted, ConfigError, TooManyErrors


@dataclass(frozen=True, kw_only=True)
class Budget:
    """Limits for one run; ``None`` means unlimited."""

    max_calls: int | None = None
    max_tokens: int | None = None
    max_cost: float | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value is not None and value <= 0:
                raise ConfigError(f"must be positive, got {value}", field=f"budget.{name}")

    @property
    def unlimited(self) -> bool:
        return all(v is None for v in asdict(self).values())


DEFAULT_MAX_ERRORS = 0.2
"""Stop a run when more than 20% of its model calls failed (once 10 were made)."""
MIN_CALLS_FOR_SHARE = 10
"""Calls a run makes before a share of failed calls can stop it (one early failure is not an outage)."""


@dataclass(frozen=True)
class ErrorLimit:
    """How many failed model calls (API errors after retries) a run tolerates before it stops.

    ``share``: more than this fraction of the run's calls failed, checked once :data:`MIN_CALLS_FOR_SHARE` calls
    were made; ``count``: more than this many calls failed; neither: no limit. Build one with :meth:`of`.
    """

    share: float | None = DEFAULT_MAX_ERRORS
    count: int | None = None

    @classmethod
    def of(cls, value: ErrorLimit | float | int | str | None) -> ErrorLimit:
        """``0.2`` or ``"20%"``: a share of the calls; ``5`` or ``"5"``: a count; ``None`` or ``"none"``: no limit."""
        if isinstance(value, ErrorLimit):
            return value
        parsed = _parse_limit(value) if isinstance(value, str) else value
        if parsed is None:
            return cls(share=None)
        if isinstance(parsed, float) and 0.0 <= parsed <= 1.0:
            return cls(share=parsed)
        if isinstance(parsed, int) and not isinstance(parsed, bool) and parsed >= 0:
            return cls(share=None, count=parsed)
        raise ConfigError(
            f"expected a share of the calls like 20% (or 0.2), a count like 5, or none; got {value!r}.",
            field="max_errors",
        )

    def exceeded(self, errors: int, calls: int) -> bool:
        if self.count is not None:
            return errors > self.count
        return self.share is not None and calls >= MIN_CALLS_FOR_SHARE and errors > self.share * calls

    def describe(self) -> str:
        if self.count is not None:
            return f"max_errors={self.count}"
        return f"max_errors={self.share * 100:g}%" if self.share is not None else "no max_errors"


def _parse_limit(text: str) -> float | int | str | None:
    """``"20%"`` → 0.2, ``"0.2"`` → 0.2, ``"5"`` → 5, ``"none"`` → None; anything else comes back as is."""
    t = text.strip().lower()
    if t in ("none", "off"):
        return None
    try:
        return float(t[:-1]) / 100 if t.endswith("%") else float(t) if "." in t else int(t)
    except ValueError:
        return text


@dataclass
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    cache_hits: int = 0
    errors: int = 0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, other: Usage) -> None:
        for k, v in asdict(other).items():
            setattr(self, k, getattr(self, k) + v)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Usage:
        return cls(
            **{
                k: d[k]
                for k in ("calls", "prompt_tokens", "completion_tokens", "cost", "cache_hits", "errors")
                if k in d
            }
        )


@dataclass
class BudgetTracker:
    """Live usage against a :class:`Budget`, per role (``task``, ``proposer``, ``train``, ``report``).

    Only roles in ``limited_roles`` count towards the limits; the final held-out evaluation (role
    ``report``) is accounted but never cut short. ``path`` persists usage after every batch so a resumed run
    continues from the spent budget. ``max_errors`` stops the run (every role) when too many of the calls made
    in this process failed (:meth:`count_failures`); a resumed run starts that count afresh.
    """

    budget: Budget = field(default_factory=Budget)
    by_role: dict[str, Usage] = field(default_factory=dict)
    limited_roles: frozenset[str] = frozenset({"task", "proposer", "train"})
    path: Path | None = None
    elapsed_before: float = 0.0
    max_errors: ErrorLimit = field(default_factory=lambda: ErrorLimit(share=None))
    _process_calls: int = field(default=0, repr=False)
    _process_failures: int = field(default=0, repr=False)
    _started: float = field(default_factory=time.monotonic, repr=False)
    _requested: set[str] = field(default_factory=set, repr=False)
    _requested_uncached: int = field(default=0, repr=False)

    def note_requests(self, role: str, keys: Sequence[str], *, cached: bool = True) -> None:
        """Record requests made for ``role`` (for :meth:`planned_left`); without a cache every request counts,
        since a repeated one is paid again."""
        if role not in self.limited_roles:
            return
        if cached:
            self._requested.update(keys)
        else:
            self._requested_uncached += len(keys)

    def note_calls(self, role: str, n: int) -> None:
        """Record ``n`` requests that are never cached (e.g. soft-prompt training examples)."""
        if role in self.limited_roles:
            self._requested_uncached += n

    @property
    def planned(self) -> int:
        """Calls this run would have paid so far with a cold cache (limited roles)."""
        return len(self._requested) + self._requested_uncached

    def planned_left(self) -> int | None:
        """The call limit minus :attr:`planned` (None without a call limit): what optimizers plan with."""
        if self.budget.max_calls is None:
            return None
        return max(0, self.budget.max_calls - self.planned)

    @property
    def total(self) -> Usage:
        out = Usage()
        for u in self.by_role.values():
            out.add(u)
        return out

    def limited(self) -> Usage:
        out = Usage()
        for role, u in self.by_role.items():
            if role in self.limited_roles:
                out.add(u)
        return out

    @property
    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self._started

    def exhausted_reason(self) -> str | None:
        b, u = self.budget, self.limited()
        if b.max_calls is not None and u.calls >= b.max_calls:
            return f"call budget spent ({u.calls}/{b.max_calls})"
        if b.max_tokens is not None and u.tokens >= b.max_tokens:
            return f"token budget spent ({u.tokens}/{b.max_tokens})"
        if b.max_cost is not None and u.cost >= b.max_cost:
            return f"cost budget spent (${u.cost:.4f}/${b.max_cost})"
        if b.max_seconds is not None and self.elapsed >= b.max_seconds:
            return f"time budget spent ({self.elapsed:.0f}s/{b.max_seconds:.0f}s)"
        return None

    def allow(self, role: str, n: int) -> int:
        """How many of ``n`` new calls may go out now; raises :class:`BudgetExhausted` if none."""
        if role not in self.limited_roles:
            return n
        reason = self.exhausted_reason()
        if reason:
            raise BudgetExhausted(reason)
        if self.budget.max_calls is None:
            return n
        return min(n, self.budget.max_calls - self.limited().calls)

    def charge(self, role: str, usage: Usage) -> None:
        self.by_role.setdefault(role, Usage()).add(usage)
        self.save()

    def count_failures(self, calls: int, failures: int, last_failure: str | None, *, model: str) -> None:
        """Add a batch's calls and failed calls to this process's count; raise :class:`TooManyErrors` (naming
        ``last_failure`` and ``model``) when the failures exceed :attr:`max_errors`."""
        self._process_calls += calls
        self._process_failures += failures
        if failures and self.max_errors.exceeded(self._process_failures, self._process_calls):
            raise TooManyErrors(
                f"{self._process_failures} of {self._process_calls} model calls failed, more than "
                f"{self.max_errors.describe()} allows; last error: {last_failure} [{model}]. Check the endpoint, "
                "model name and credentials, or raise --max-errors."
            )

    def fraction_used(self) -> float | None:
        """Share of the tightest limit spent, for progress bars (None when unlimited)."""
        b, u = self.budget, self.limited()
        parts = []
        if b.max_calls:
            parts.append(u.calls / b.max_calls)
        if b.max_tokens:
            parts.append(u.tokens / b.max_tokens)
        if b.max_cost:
            parts.append(u.cost / b.max_cost)
        if b.max_seconds:
            parts.append(self.elapsed / b.max_seconds)
        return min(1.0, max(parts)) if parts else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "budget": asdict(self.budget),
            "total": self.total.to_dict(),
            "by_role": {k: v.to_dict() for k, v in sorted(self.by_role.items())},
            "elapsed_seconds": round(self.elapsed, 3),
        }

    def save(self) -> None:
        if self.path is not None:
            write_text_atomic(self.path, json.dumps(self.to_dict(), indent=2))

    def restore(self, path: Path) -> None:
        """Continue from usage saved by an interrupted run (a damaged file is a :class:`ConfigError` naming it)."""
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            self.by_role = {k: Usage.from_dict(v) for k, v in d.get("by_role", {}).items()}
            self.elapsed_before = float(d.get("elapsed_seconds", 0.0))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"the run's saved usage is damaged ({exc}). Delete it to resume counting the budget from zero, "
                "or start a new run.",
                source=str(path),
            ) from None
        self._started = time.monotonic()
