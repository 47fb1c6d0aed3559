"""Confidence intervals and paired comparisons (percentile bootstrap, seeded, pure Python)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

N_BOOTSTRAP = 1000


def mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


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
    """Two-sided bootstrap p-value for 'no difference'."""
    b_better: int
    a_better: int

    @property
    def significant(self) -> bool:
        return self.ci_low > 0 or self.ci_high < 0

    def to_dict(self) -> dict[str, float | int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def paired_comparison(
    a: Sequence[float], b: Sequence[float], *, level: float = 0.95, n: int = N_BOOTSTRAP, seed: int = 0
) -> PairedComparison:
    if len(a) != len(b) or not a:
        raise ValueError("paired comparison needs two equally long, non-empty score lists")
    diffs = [y - x for x, y in zip(a, b, strict=True)]
    d = mean(diffs)
    if min(diffs) == max(diffs):
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
        b_better=sum(x > 0 for x in diffs),
        a_better=sum(x < 0 for x in diffs),
    )
