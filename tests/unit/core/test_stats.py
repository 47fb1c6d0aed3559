"""Confidence intervals: Wilson for 0/1 means, Newcombe for paired 0/1 differences, bootstrap otherwise."""

from __future__ import annotations

import pytest

from promptopt.core.stats import (
    bootstrap_ci,
    interval_method,
    mcnemar_exact_p,
    mean_ci,
    newcombe_paired_interval,
    paired_comparison,
    wilson_interval,
)
from promptopt.evaluation.evaluator import EvalResult, ExampleRecord, compare


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    [
        # Newcombe (1998), Stat Med 17:857, the examples of method 3 (score interval without continuity correction)
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        # the textbook 0/10, 5/10, 10/10 and the "rule of 3"-like 0/100
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (0, 100, 0.0, 0.0370),
    ],
)
def test_wilson_matches_textbook_values(successes: int, n: int, low: float, high: float) -> None:
    lo, hi = wilson_interval(successes, n)
    assert (lo, hi) == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    with pytest.raises(ValueError):
        wilson_interval(0, 0)


def test_binary_means_are_not_degenerate_at_0_and_100_percent() -> None:
    assert mean_ci([0.0] * 100) == (0.0, pytest.approx(0.0370, abs=5e-5))
    lo, hi = mean_ci([1.0] * 100)
    assert lo == pytest.approx(0.9630, abs=5e-5) and hi == 1.0
    assert interval_method([1.0, 0.0, True]) == "wilson"
    assert mean_ci([]) == (0.0, 0.0)


def test_wilson_narrows_with_n_and_widens_with_level() -> None:
    assert mean_ci([1.0] * 1000)[0] > mean_ci([1.0] * 100)[0]
    assert mean_ci([1.0, 0.0] * 20, level=0.99)[0] < mean_ci([1.0, 0.0] * 20)[0]


def test_continuous_scores_still_bootstrap() -> None:
    xs = [0.5, 0.25, 1.0, 0.75, 0.0, 0.6] * 5
    assert interval_method(xs) == "bootstrap"
    assert mean_ci(xs) == bootstrap_ci(xs)
    lo, hi = mean_ci(xs)
    assert lo < sum(xs) / len(xs) < hi
    assert mean_ci([0.5, 0.5]) == (0.5, 0.5)  # a constant non-binary score has no sampling spread to show


def test_newcombe_paired_matches_the_published_example() -> None:
    # Cavo et al. (2012) via Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", ch. 8:
    # square-and-add (Newcombe) CI for the difference -0.0621 is (-0.1186, -0.0046)
    lo, hi = newcombe_paired_interval(59, 6, 16, 80)
    assert (lo, hi) == (pytest.approx(-0.1186, abs=5e-5), pytest.approx(-0.0046, abs=5e-5))
    assert mcnemar_exact_p(6, 16) == pytest.approx(0.0525, abs=5e-5)


def pairs(both: int, only_b: int, only_a: int, neither: int) -> tuple[list[float], list[float]]:
    a = [1.0] * both + [0.0] * only_b + [1.0] * only_a + [0.0] * neither
    b = [1.0] * both + [1.0] * only_b + [0.0] * only_a + [0.0] * neither
    return a, b


def test_paired_comparison_uses_newcombe_and_mcnemar_for_binary_scores() -> None:
    a, b = pairs(59, 6, 16, 80)
    c = paired_comparison(a, b)
    assert c.method == "newcombe"
    assert (c.ci_low, c.ci_high) == newcombe_paired_interval(59, 6, 16, 80)
    assert c.diff == pytest.approx(-10 / 161) and c.p_value == mcnemar_exact_p(6, 16)
    assert (c.b_better, c.a_better, c.n) == (6, 16, 161)


@pytest.mark.parametrize("table", [(20, 0, 0, 0), (0, 0, 0, 20), (10, 0, 0, 10), (1, 0, 0, 1)])
def test_paired_all_agree_is_not_degenerate_and_contains_zero(table: tuple[int, int, int, int]) -> None:
    c = paired_comparison(*pairs(*table))
    assert c.diff == 0.0 and c.p_value == 1.0 and not c.significant
    assert c.ci_low < 0 < c.ci_high
    assert c.ci_high - c.ci_low > 0.1


def test_paired_all_one_way_is_significant_but_not_a_point() -> None:
    c = paired_comparison(*pairs(0, 20, 0, 0))  # B right everywhere A was wrong
    assert c.diff == 1.0 and c.significant
    assert 0.5 < c.ci_low < 1.0 == c.ci_high
    assert c.p_value == pytest.approx(2 * 0.5**20)
    small = paired_comparison(*pairs(0, 3, 0, 0))  # 3 of 3 is not enough evidence for p < 0.05
    assert small.p_value == 0.25 and small.ci_low < 0.5


def test_paired_continuous_scores_still_bootstrap() -> None:
    a = [0.2, 0.4, 0.6, 0.8, 0.5] * 4
    b = [0.3, 0.4, 0.9, 0.8, 0.7] * 4
    c = paired_comparison(a, b)
    assert c.method == "bootstrap"
    assert c.ci_low <= c.diff <= c.ci_high
    assert paired_comparison(a, b) == c  # seeded


def records(scores: list[float]) -> tuple[ExampleRecord, ...]:
    return tuple(ExampleRecord(example_id=f"e{i}", prediction="x", score=s) for i, s in enumerate(scores))


def test_every_reported_interval_goes_through_the_binary_methods() -> None:
    zero = EvalResult(prompt_id="a", split="test", mode="score", records=records([0.0] * 100))
    assert zero.ci == mean_ci(zero.scores) and zero.ci[1] > 0.03
    s = zero.summary()
    assert (s["ci_low"], s["ci_high"], s["ci_method"]) == (0.0, zero.ci[1], "wilson")
    assert "0.000 [95% CI 0.000–0.037]" in zero.format()
    same = compare(zero, zero)
    assert same.method == "newcombe" and same.ci_low < 0 < same.ci_high
