"""``apo``: Automatic Prompt Optimization with "gradient descent" and beam search — ProTeGi (Pryzant, Iter,
Li, Lee, Zhu, Zeng; EMNLP 2023, arXiv:2305.03495). Meta-prompts follow the authors' prompts as ported in
INK-USC/PE2 (``meta_prompts/apo_gradient.jinja``, ``apo_edit.jinja``).

One step, for each beam parent:

1. *Textual gradient*: ``n_gradients`` times, show ``n_failures`` failures (a fresh sample each time) and
   ask for ``n_reasons`` reasons why the prompt gets them wrong.
2. *Edit along the gradient*: ``edits_per_gradient`` new prompts per gradient, from the prompt, the
   failures and the gradient.
3. *Monte-Carlo successors*: ``n_paraphrases`` paraphrases of each accepted edit (the same
   ``ape_resample.jinja`` meta-prompt APE uses); a paraphrase is recorded as a child of the parent, with
   ``meta["paraphrase_of"]`` naming the edit.
4. *Beam selection*: shared with pe2/opro (:class:`~promptopt.optimizers.beam.BeamSearchOptimizer`).

Mapping choices: ProTeGi selects the beam with bandits (UCB / successive rejects) over train minibatches;
here candidates are raced once on a dev minibatch and the best go to the full dev split, so every
optimizer of the family spends budget the same way and is compared on the same evaluator. Failures come
from a train batch per parent (``failure_split``), as in ProTeGi. The original "zero-shot classifier"
wording is generalised to "a prompt", since tasks here include generation. The gradient reply is passed
on verbatim (up to ``gradient_max_tokens``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from promptopt.optimizers.base import register_optimizer
from promptopt.optimizers.beam import BeamSearchOptimizer, FailureSearchConfig, SearchConfig
from promptopt.optimizers.proposer import Failure, render_conversation

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.run.history import TrialRecord


@dataclass(frozen=True, kw_only=True)
class APOConfig(FailureSearchConfig):
    n_failures: int = field(default=4, metadata={"min": 1, "help": "failures shown per gradient (ProTeGi: 4)"})
    n_gradients: int = field(default=2, metadata={"min": 1, "help": "textual gradients per beam parent"})
    n_reasons: int = field(default=3, metadata={"min": 1, "help": "reasons asked for in one gradient"})
    edits_per_gradient: int = field(default=1, metadata={"min": 1, "help": "new prompts written per gradient"})
    n_paraphrases: int = field(default=1, metadata={"min": 0, "help": "Monte-Carlo paraphrases per accepted edit"})
    gradient_max_tokens: int = field(default=128, metadata={"min": 1, "help": "length of a gradient reply"})


@register_optimizer("apo")
class APOOptimizer(BeamSearchOptimizer):
    """ProTeGi: textual gradients from failures, edits along them, paraphrases, beam search."""

    Config = APOConfig
    config: APOConfig
    uses_failures = True

    def step_knobs(self) -> dict[str, int]:
        return {"n_gradients": 1, "edits_per_gradient": 1, "n_paraphrases": 0}

    def step_shape(self, n_parents: int, config: SearchConfig) -> tuple[int, int]:
        """Gradients per parent, edits per gradient, paraphrases per accepted edit."""
        assert isinstance(config, APOConfig)
        gradients = n_parents * config.n_gradients
        edits = gradients * config.edits_per_gradient
        paraphrases = edits * config.n_paraphrases
        return edits + paraphrases, gradients + edits + paraphrases

    def children(self, parents: Sequence[TrialRecord], config: SearchConfig) -> list[Prompt]:
        """Steps 1-3 for each parent: gradients from failure batches, edits along them, paraphrases of the edits."""
        assert isinstance(config, APOConfig)
        c = config
        jobs: list[tuple[TrialRecord, list[Failure]]] = []
        for parent in parents:
            for _ in range(c.n_gradients):
                failures = self.failure_batch(parent)
                if failures:
                    jobs.append((parent, failures))
        if not jobs:
            return []
        # 1. textual gradients: reasons why the prompt gets a fresh batch of failures wrong
        shown = [[f.as_dict() for f in failures] for _, failures in jobs]
        gradients = self.proposer.ask_chat(
            [
                render_conversation("apo_gradient", prompt=p.prompt.instruction, failures=s, n_reasons=c.n_reasons)
                for (p, _), s in zip(jobs, shown, strict=True)
            ],
            max_tokens=c.gradient_max_tokens,
        )
        # 2. edits along each gradient
        edit_jobs = [
            (parent, failures, s, g.strip())
            for (parent, failures), s, g in zip(jobs, shown, gradients, strict=True)
            for _ in range(c.edits_per_gradient)
        ]
        asks = [
            render_conversation("apo_edit", prompt=p.prompt.instruction, failures=s, gradient=g, max_words=c.max_words)
            for p, _, s, g in edit_jobs
        ]
        replies = self.proposer.ask_chat(asks)
        edits: list[tuple[TrialRecord, Prompt]] = []
        for (parent, failures, _, gradient), ask, reply in zip(edit_jobs, asks, replies, strict=True):
            meta = {"failures": [f.example.id for f in failures], "gradient": gradient}
            kids = self.screen([reply], parent.prompt, origin="apo", metas=[meta], meta_prompts=[ask])
            edits += [(parent, kid) for kid in kids]
        out = [kid for _, kid in edits]
        # 3. Monte-Carlo successors: paraphrases of each accepted edit, children of the same parent
        if c.n_paraphrases:
            para_jobs = [(parent, kid) for parent, kid in edits for _ in range(c.n_paraphrases)]
            asks = [render_conversation("ape_resample", instruction=kid.instruction) for _, kid in para_jobs]
            replies = self.proposer.ask_chat(asks)
            for (parent, kid), ask, reply in zip(para_jobs, asks, replies, strict=True):
                meta = {"paraphrase_of": kid.id}
                out += self.screen([reply], parent.prompt, origin="apo:paraphrase", metas=[meta], meta_prompts=[ask])
        return out
