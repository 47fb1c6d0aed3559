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

from promptopt.exceptions import BudgetExhausted, ConfigError


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
    continues from the spent budget.
    """

    budget: Budget = field(default_factory=Budget)
    by_role: dict[str, Usage] = field(default_factory=dict)
    limited_roles: frozenset[str] = frozenset({"task", "proposer", "train"})
    path: Path | None = None
    elapsed_before: float = 0.0
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
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.to_dict(), indent=2))
            tmp.replace(self.path)

    def restore(self, path: Path) -> None:
        """Continue from usage saved by an interrupted run."""
        d = json.loads(path.read_text())
        self.by_role = {k: Usage.from_dict(v) for k, v in d.get("by_role", {}).items()}
        self.elapsed_before = float(d.get("elapsed_seconds", 0.0))
        self._started = time.monotonic()
