"""Rephrasing robustness (Sun et al., 2023): one prompt's score under semantically equivalent instructions, with the
shared evaluator, cache and budget, as :mod:`promptopt.evaluation.spread` does for formats."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from promptopt.evaluation.spread import ScoreSpread

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.core.data import Example
    from promptopt.evaluation.evaluator import Evaluator


@dataclass(frozen=True)
class RephrasingResult(ScoreSpread):
    """Scores of one prompt under several instructions (``instructions[0]`` is its own)."""

    instructions: tuple[str, ...]
    sources: tuple[str, ...]
    """Where each instruction comes from: ``original``, ``proposer`` or the rules that wrote it."""
    rejected: Mapping[str, int] = field(default_factory=dict)
    """Candidate paraphrases rejected by screening, by reason."""
    proposed: int = 0
    """Proposer replies asked for."""
    kind: ClassVar[str] = "paraphrases"

    def variant(self, i: int) -> dict[str, Any]:
        return {"instruction": self.instructions[i], "source": self.sources[i]}

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "proposed": self.proposed, "rejected": dict(self.rejected)}


def rephrasing_spread(
    evaluator: Evaluator,
    prompt: Prompt,
    paraphrases: Sequence[tuple[str, str]],
    *,
    examples: Sequence[Example] | None = None,
    split: str = "test",
    rejected: Mapping[str, int] | None = None,
    proposed: int = 0,
) -> RephrasingResult:
    """Score ``prompt`` as written and under each ``(source, instruction)`` of ``paraphrases`` on ``examples``
    (``rejected`` and ``proposed``: how the paraphrases were screened, for the record)."""
    variants = [("original", prompt.instruction), *paraphrases]
    results = tuple(
        evaluator.evaluate(
            prompt if i == 0 else prompt.with_instruction(text, origin="paraphrase"), examples, split=split
        )
        for i, (_, text) in enumerate(variants)
    )
    return RephrasingResult(
        prompt_id=prompt.id,
        results=results,
        instructions=tuple(t for _, t in variants),
        sources=tuple(s for s, _ in variants),
        rejected=dict(rejected or {}),
        proposed=proposed,
    )
