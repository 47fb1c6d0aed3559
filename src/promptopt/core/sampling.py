"""The In-Context Sampling plan a :class:`~promptopt.core.candidate.Prompt` carries (``Prompt.ics``): K demo
sets (or a pool to pick from per query) and an aggregation rule. Building, expanding and aggregating such
prompts is :mod:`promptopt.prompts.ics`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError

Strategy = Literal["random", "similar", "diverse"]
Aggregation = Literal["vote", "confidence"]
STRATEGIES: tuple[Strategy, ...] = ("random", "similar", "diverse")
AGGREGATIONS: tuple[Aggregation, ...] = ("vote", "confidence")


@dataclass(frozen=True, kw_only=True)
class InContextSampling:
    """K demo sets and an aggregation rule (see the module docstring).

    ``temperature`` > 0 samples each sub-prompt's generation (sample index j+1), which with K identical
    demo sets is self-consistency ("more samples" of one prompt); label scoring ignores it.
    """

    k: int
    shots: int
    strategy: Strategy = "random"
    aggregation: Aggregation = "vote"
    demo_sets: tuple[tuple[Example, ...], ...] = ()
    """The K fixed sets (``random``/``diverse``)."""
    pool: tuple[Example, ...] = ()
    """Where ``similar`` picks demos per query."""
    embedder: str = "auto"
    temperature: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "demo_sets", tuple(tuple(s) for s in self.demo_sets))
        object.__setattr__(self, "pool", tuple(self.pool))
        if self.k < 1 or self.shots < 0:
            raise ConfigError(f"need k >= 1 and shots >= 0, got k={self.k}, shots={self.shots}.", field="ics")
        if self.strategy not in STRATEGIES:
            raise ConfigError(f"unknown strategy {self.strategy!r}; use {', '.join(STRATEGIES)}.", field="strategy")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigError(
                f"unknown aggregation {self.aggregation!r}; use {', '.join(AGGREGATIONS)}.", field="aggregation"
            )
        if self.strategy == "similar":
            if not self.pool:
                raise ConfigError("strategy 'similar' needs a pool of demos to pick from.", field="pool")
        elif len(self.demo_sets) != self.k:
            raise ConfigError(f"expected {self.k} demo sets, got {len(self.demo_sets)}.", field="demo_sets")

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "shots": self.shots,
            "strategy": self.strategy,
            "aggregation": self.aggregation,
            "demo_sets": [[d.to_dict() for d in s] for s in self.demo_sets],
            "pool": [d.to_dict() for d in self.pool],
            "embedder": self.embedder,
            "temperature": self.temperature,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> InContextSampling:
        return cls(
            **{
                **d,
                "demo_sets": tuple(tuple(Example.from_dict(x) for x in s) for s in d.get("demo_sets", ())),
                "pool": tuple(Example.from_dict(x) for x in d.get("pool", ())),
            }
        )

    def describe(self) -> str:
        return f"ICS K={self.k} × {self.shots} demos, {self.strategy}, {self.aggregation}"
