"""FormatSpread analysis: one prompt's score under ``n`` plausible formats (:mod:`promptopt.prompts.formats`),
with the shared evaluator, cache and budget, and the interval it spans."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from promptopt.core.candidate import Prompt
from promptopt.prompts.formats import Format, apply_format, has_options, sample_formats

if TYPE_CHECKING:
    from promptopt.core.data import Example
    from promptopt.evaluation.evaluator import EvalResult, Evaluator


@dataclass(frozen=True)
class ScoreSpread:
    """Scores of one prompt under several variants (``results[0]`` is the prompt as written): the min / median /
    max interval and a per-variant table. :class:`SpreadResult` varies the format; ``promptopt robustness`` the
    instruction (:class:`promptopt.evaluation.rephrasing.RephrasingResult`)."""

    prompt_id: str
    results: tuple[EvalResult, ...]
    kind: ClassVar[str] = "variants"

    def variant(self, i: int) -> dict[str, Any]:
        """Variant ``i`` as the summary's table shows it (besides its mean and CI)."""
        raise NotImplementedError

    @property
    def means(self) -> list[float]:
        return [r.mean for r in self.results]

    @property
    def min(self) -> float:
        return min(self.means)

    @property
    def median(self) -> float:
        return statistics.median(self.means)

    @property
    def max(self) -> float:
        return max(self.means)

    @property
    def spread(self) -> float:
        return self.max - self.min

    def summary(self) -> dict[str, Any]:
        r0 = self.results[0]
        return {
            "prompt_id": self.prompt_id,
            "split": r0.split,
            "n": r0.n,
            "metric": r0.metric,
            f"n_{self.kind}": len(self.results),
            "original": r0.mean,
            "min": self.min,
            "median": self.median,
            "max": self.max,
            "spread": self.spread,
            self.kind: [{**self.variant(i), "mean": r.mean, "ci": list(r.ci)} for i, r in enumerate(self.results)],
        }

    def format(self) -> str:
        r0 = self.results[0]
        return (
            f"{r0.metric} over {len(self.results)} {self.kind} on {r0.split} (n={r0.n}): "
            f"min {self.min:.3f} · median {self.median:.3f} · max {self.max:.3f} "
            f"(spread {self.spread:.3f}; as written {r0.mean:.3f})"
        )


@dataclass(frozen=True)
class SpreadResult(ScoreSpread):
    """Scores of one prompt under several formats (``results[0]`` is the prompt as written)."""

    formats: tuple[Format, ...]
    kind: ClassVar[str] = "formats"

    def variant(self, i: int) -> dict[str, Any]:
        f = self.formats[i]
        return {"format": f.describe(), **f.to_dict()}


def format_spread(
    evaluator: Evaluator,
    prompt: Prompt,
    *,
    n_formats: int = 10,
    seed: int = 0,
    examples: Sequence[Example] | None = None,
    split: str = "test",
) -> SpreadResult:
    """Score ``prompt`` under ``n_formats`` formats (see :func:`sample_formats`) on ``examples`` of ``split``."""
    formats = sample_formats(n_formats, seed=seed, enumeration=has_options(evaluator.task))
    results = tuple(evaluator.evaluate(apply_format(prompt, f), examples, split=split) for f in formats)
    return SpreadResult(prompt_id=prompt.id, formats=tuple(formats), results=results)
