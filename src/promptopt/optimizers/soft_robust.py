"""The robust soft prompt (Sun et al., 2023, "Evaluating the Zero-shot Robustness of Instruction-tuned Language
Models"): soft-prompt parameters trained so that semantically equivalent instructions lead to the same answer.

With ``paraphrases`` > 0 the ``soft_prompt`` optimizer trains under its start prompt's instruction and that many
screened paraphrases of it (:func:`promptopt.optimizers.paraphrases.paraphrase_set`). Each step shows every batch
example under ``paraphrases_per_example`` instructions drawn (seeded) from that pool; the loss is the task loss (the
mean NLL over all those renders) plus ``consistency`` × the Jensen–Shannon divergence between the model's answer
distributions (the next-token distribution where the answer starts) under the example's instructions — the mean KL
of each to their average. Each render is one training call.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from promptopt.core.exceptions import ConfigError
from promptopt.optimizers.paraphrases import Source, paraphrase_set
from promptopt.optimizers.proposer import Proposer
from promptopt.prompts.ics import render_all

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.core.data import Example
    from promptopt.models.soft import SoftPromptModel
    from promptopt.run.context import RunContext


class RobustSettings(Protocol):
    """The robust soft prompt's settings (fields of ``SoftPromptConfig``; a protocol, so no import cycle)."""

    @property
    def train_instructions(self) -> tuple[str, ...] | None: ...
    @property
    def paraphrases(self) -> int: ...
    @property
    def paraphrase_source(self) -> Source: ...
    @property
    def paraphrases_per_example(self) -> int: ...
    @property
    def consistency(self) -> float: ...


def consistency(first_logprobs: Any, k: int) -> Any:
    """Mean Jensen–Shannon divergence within each group of ``k`` consecutive rows of answer log-distributions."""
    import torch

    lp = first_logprobs.view(-1, k, first_logprobs.shape[-1])
    p = lp.exp()
    log_mean = torch.log(p.mean(1, keepdim=True).clamp_min(1e-12))
    return (p * (lp - log_mean)).sum(-1).mean()


class ParaphraseTraining:
    """Renders of the training examples under each instruction of the pool, and the robust loss of one step."""

    def __init__(
        self,
        prompt: Prompt,
        examples: Sequence[Example],
        instructions: Sequence[str],
        *,
        per_example: int,
        weight: float,
        seed: int,
    ) -> None:
        self.instructions = [prompt.instruction, *(i for i in instructions if i != prompt.instruction)]
        self.k = min(per_example, len(self.instructions))
        self.weight = weight
        self.seed = seed
        variants = [prompt, *(prompt.with_instruction(i, origin="paraphrase") for i in self.instructions[1:])]
        self.renders = [[(render_all(v, [ex])[0][0], ex.answer) for ex in examples] for v in variants]

    def loss(self, model: SoftPromptModel, indices: Sequence[int], step: int, *, eos: bool) -> tuple[Any, int, int]:
        """(task loss + weight × consistency, tokens read, renders passed) for the examples at ``indices``."""
        rng = random.Random(f"{self.seed}:paraphrases:{step}")
        pairs = []
        for i in indices:
            for j in rng.sample(range(len(self.instructions)), self.k):
                pairs.append(self.renders[j][i])
        rows, first, tokens = model.nll_rows(pairs, eos=eos)
        loss = rows.mean()
        if self.weight and self.k > 1:
            loss = loss + self.weight * consistency(first, self.k)
        return loss, tokens, len(pairs)


def paraphrase_training(
    ctx: RunContext, c: RobustSettings, start: Prompt, train: Sequence[Example]
) -> ParaphraseTraining:
    """The instruction pool (``train_instructions``, or ``paraphrases`` screened paraphrases of ``start``'s
    instruction, from the rules and/or the run's proposer) and the robust loss over it."""
    instructions = list(c.train_instructions or ())
    if not instructions:
        writer = Proposer(ctx.proposer, temperature=0.9, max_tokens=96, before_call=ctx.stop_if_asked)
        found = paraphrase_set(
            start,
            c.paraphrases,
            labels=ctx.task.labels or (),
            proposer=writer if c.paraphrase_source != "rules" else None,
            n_proposals=2 * c.paraphrases,
            source=c.paraphrase_source,
            seed=ctx.seed,
        )
        instructions = found.texts
    if not instructions:
        raise ConfigError(
            f"no equivalent paraphrase of the instruction {start.instruction!r} passed screening; give "
            "train_instructions, or use paraphrase_source both with a proposer.",
            field="paraphrases",
        )
    return ParaphraseTraining(
        start, train, instructions, per_example=c.paraphrases_per_example, weight=c.consistency, seed=ctx.seed
    )
