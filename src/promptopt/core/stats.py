"""Confidence intervals and paired comparisons: the one implementation behind every reported interval.

The method follows the scores themselves (pure Python, deterministic):

- **0/1 scores** (every value is 0 or 1, e.g. accuracy): the Wilson score interval for a mean
  (:func:`wilson_interval`) and Newcombe's hybrid score interval for a paired difference
  (:func:`newcombe_paired_interval`), with the exact McNemar test as the p-value. Closed form, and never
  zero-width: 0/100 correct gives [0, 0.037], and two prompts that agree on every example give an interval
  around 0 whose width shrinks with n, not a point.
- **Any other scores** (F1, similarity, …): the seeded percentile bootstrap of the mean (of the paired
  differences), with a bootstrap p-value.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist
from typing import Literal

N_BOOTSTRAP = 1000

IntervalMethod = Literal["wilson", "bootstrap"]
PairedMethod = Literal["newcombe", "bootstrap"]


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def is_binary(xs: Sequence[float]) -> bool:
    """Whether every score is 0 or 1 (then the binomial intervals apply)."""
    return all(x == 0 or x == 1 for x in xs)


def _z(level: float) -> float:
    """The standard normal quantile of a two-sided ``level`` interval (1.95996 for 0.95)."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def wilson_interval(successes: int, n: int, *, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927; Newcombe 1998, Stat Med 17:857, method 3).

    81/263 gives [0.2553, 0.3662]; 0/10 gives [0, 0.2775].
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n >= 1, got {successes}/{n}")
    z = _z(level)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (0.0 if successes == 0 else centre - half, 1.0 if successes == n else centre + half)


def newcombe_paired_interval(
    both: int, only_b: int, only_a: int, neither: int, *, level: float = 0.95
) -> tuple[float, float]:
    """Interval for p_B − p_A on paired 0/1 scores: Newcombe's hybrid score method 10 (Newcombe 1998, "Improved
    confidence intervals for the difference between binomial proportions based on paired data", Stat Med
    17:2635–2650), as in Altman et al., *Statistics with Confidence* (2000), p. 52.

    The Wilson limits of both proportions are combined through the correlation φ of the paired table, with
    Newcombe's correction (φ* = max(AD − BC − n/2, 0)/√(EFGH) when AD > BC; φ = 0 when a margin is empty), which
    keeps the interval from collapsing when every pair agrees. Counts: pairs where both, only B, only A, neither
    scored 1.
    """
    n = both + only_b + only_a + neither
    p_b, p_a = (both + only_b) / n, (both + only_a) / n
    l_b, u_b = wilson_interval(both + only_b, n, level=level)
    l_a, u_a = wilson_interval(both + only_a, n, level=level)
    margins = (both + only_b) * (only_a + neither) * (both + only_a) * (only_b + neither)
    ad_bc = both * neither - only_b * only_a
    phi = 0.0 if margins == 0 else (max(ad_bc - n / 2, 0.0) if ad_bc > 0 else ad_bc) / math.sqrt(margins)

    def spread(x: float, y: float) -> float:
        return math.sqrt(max(0.0, x * x - 2 * phi * x * y + y * y))

    d = p_b - p_a
    return (max(-1.0, d - spread(p_b - l_b, u_a - p_a)), min(1.0, d + spread(u_b - p_b, p_a - l_a)))


def mcnemar_exact_p(only_b: int, only_a: int) -> float:
    """Two-sided exact McNemar p-value: the binomial test of the discordant pairs against 1/2 (1.0 if none)."""
    m = only_b + only_a
    tail = sum(math.comb(m, i) for i in range(min(only_b, only_a) + 1))
    return min(1.0, 2 * tail / 2**m)


def _percentile(sorted_xs: Sequence[float], q: float) -> float:
    idx = q * (len(sorted_xs) - 1)
    lo = int(idx)
    hi = min(lo + 1, len(sorted_xs) - 1)
    return sorted_xs[lo] + (sorted_xs[hi] - sorted_xs[lo]) * (idx - lo)


def bootstrap_means(xs: Sequence[float], *, n: int = N_BOOTSTRAP, seed: int = 0) -> list[float]:
    rng = random.Random(seed)
    k = len(xs)
    return sorted(sum(rng.choices(xs, k=k)) / k for _ in range(n))


def bootstrap_ci(
    xs: Sequence[float], *, level: float = 0.95, n: int = N_BOOTSTRAP, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean; (0, 0) for no data."""
    if not xs:
        return (0.0, 0.0)
    if min(xs) == max(xs):
        return (float(xs[0]), float(xs[0]))
    means = bootstrap_means(xs, n=n, seed=seed)
    alpha = (1 - level) / 2
    return (_percentile(means, alpha), _percentile(means, 1 - alpha))


def interval_method(xs: Sequence[float]) -> IntervalMethod:
    """How :func:`mean_ci` computes the interval of ``xs``."""
    return "wilson" if is_binary(xs) else "bootstrap"


def mean_ci(xs: Sequence[float], *, level: float = 0.95, n: int = N_BOOTSTRAP, seed: int = 0) -> tuple[float, float]:
    """CI of the mean score: Wilson for 0/1 scores, else the percentile bootstrap; (0, 0) for no data."""
    if not xs:
        return (0.0, 0.0)
    if interval_method(xs) == "wilson":
        return wilson_interval(round(sum(xs)), len(xs), level=level)
    return bootstrap_ci(xs, level=level, n=n, seed=seed)


@dataclass(frozen=True)
class PairedComparison:
    """B minus A on the same examples."""

    n: int
    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    p_value: float
    """Two-sided p-value for 'no difference' (exact McNemar for 0/1 scores, else bootstrap)."""
    b_better: int
    a_better: int
    method: PairedMethod
    """``newcombe`` (0/1 scores) or ``bootstrap``."""

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict[str, float | int | str]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def paired_comparison(
    a: Sequence[float], b: Sequence[float], *, level: float = 0.95, n: int = N_BOOTSTRAP, seed: int = 0
) -> PairedComparison:
    """B − A on paired scores: Newcombe's interval and exact McNemar p for 0/1 scores, else the bootstrap."""
    if len(a) != len(b) or not a:
        raise ValueError("paired comparison needs two equally long, non-empty score lists")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    d = mean(diffs)
    b_better, a_better = sum(x > 0 for x in diffs), sum(x < 0 for x in diffs)
    method: PairedMethod = "newcombe" if is_binary(a) and is_binary(b) else "bootstrap"
    if method == "newcombe":
        both = sum(x == 1 and y == 1 for x, y in zip(a, b, strict=True))
        lo, hi = newcombe_paired_interval(both, b_better, a_better, len(a) - both - b_better - a_better, level=level)
        p = mcnemar_exact_p(b_better, a_better)
    elif min(diffs) == max(diffs):
        lo = hi = d
        p = 1.0 if d == 0 else 0.0
    else:
        boots = bootstrap_means(diffs, n=n, seed=seed)
        alpha = (1 - level) / 2
        lo, hi = _percentile(boots, alpha), _percentile(boots, 1 - alpha)
        # shift the bootstrap distribution to the null (mean 0) and count as-extreme resamples
        p = sum(abs(x - d) >= abs(d) for x in boots) / len(boots)
    return PairedComparison(
        n=len(a),
        mean_a=mean(a),
        mean_b=mean(b),
        diff=d,
        ci_low=lo,
        ci_high=hi,
        p_value=p,
        b_better=b_better,
        a_better=a_better,
        method=method,
    )
