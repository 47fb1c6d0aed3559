"""``pe2``: Prompt Engineering a Prompt Engineer (Ye, Axmed, Pryzant, Khani; ACL Findings 2024,
arXiv:2311.05661). Meta-prompt ported from the authors' code (INK-USC/PE2, MIT) to Jinja2
(``meta_prompts/pe2.jinja``).

The paper's components and how each maps onto promptopt (each is a config switch, so the ablations are
presets in ``optimizers/pe2-*.yaml``):

- *Two-step task description* (``task_description``): an opening turn explains Step 1 (analyse the
  failures) and Step 2 (write the new prompt). Off: the conversation starts at the prompt and examples.
- *Context specification* (``context``): the meta-prompt shows the full template the instruction sits in,
  rendered with the parent's demos and each input field shown as ``<field>``.
- *Step-by-step reasoning template* (``reasoning_template``): for each failure, is the output correct,
  did it follow the prompt, does the prompt describe the task, must the prompt change, and how. Off: a
  free-form "explain how the prompt should change".
- The two steps are two proposer calls per child, as in the reference: the analysis (up to
  ``reasoning_max_tokens``) is fed back as an assistant turn before the request for the new prompt.
- *Batch size* (``n_failures``; the paper's "batch size"): failures shown per child, a fresh sample per child.
  As in the reference code, failures come from the *train* split: each beam parent is run once on ``failure_pool`` train
  examples (an ``EvalRequest``), so dev stays a selection set (``failure_split="dev"`` reuses the
  parent's dev errors instead and saves those calls).
- *Step size* (``step_size``): the meta-prompt says how many words may change, and children whose word
  edit distance to the parent exceeds it are rejected (reason ``step_size``). The measured distance is
  recorded on every child (``meta["edit_words"]``), with or without a limit.
- *Optimization history / momentum* (``momentum``): the edits on the parent's lineage (before → after,
  words changed, dev score before → after; the last ``history_size``) and the parent's own dev score.
  Mapping choice: the reference has the proposer write a summary of each edit (a third call); we render
  the recorded edits and scores instead — no extra call, and no summary a small proposer could garble.
- *Search*: ``n_children`` children per parent, a beam of ``beam_size`` kept across all steps
  (back-tracking), children raced on a dev minibatch before the full dev split
  (:class:`~promptopt.optimizers.beam.BeamSearchOptimizer`).

- *Meta-prompt wording* (``meta_prompt``): ``"paper"`` (default) is the reference's two-turn conversation with
  its assistant acknowledgement turn. ``"compact"`` (``meta_prompts/pe2_compact.jinja``, preset
  ``pe2-compact``) keeps the components above in one short user turn per step and ends Step 2 with
  ``Current instruction: …`` / ``New instruction:``; the new prompt is the first line after that cue in the
  reply. It is for small proposers, which the paper's wording sends into chat mode ("I'd be happy to help
  with this prompt engineering problem…"; ``benchmarks/results/meta_optimizers.md``).

Left out: the optional prompt-engineering tutorial and optimizer tutorial the reference can prepend
(several thousand words; they did not help consistently in the paper and would swamp a small
proposer's context), and instruction induction as initialisation (start from the task's seed prompt;
use ``ape`` to induce one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from promptopt.optimizers.base import register_optimizer
from promptopt.optimizers.beam import BeamSearchOptimizer, FailureSearchConfig, SearchConfig, lineage
from promptopt.optimizers.proposer import Failure, render_conversation

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.run.history import TrialRecord


MetaPromptStyle = Literal["paper", "compact"]
META_PROMPTS: dict[str, str] = {"paper": "pe2", "compact": "pe2_compact"}
ANSWER_CUES: dict[str, str | None] = {"paper": None, "compact": "New instruction:"}
"""The line a meta-prompt ends with; the new prompt is the text after it in the reply."""


@dataclass(frozen=True, kw_only=True)
class PE2Config(FailureSearchConfig):
    task_description: bool = field(default=True, metadata={"help": "two-step task description"})
    context: bool = field(default=True, metadata={"help": "show the full template the prompt sits in"})
    reasoning_template: bool = field(default=True, metadata={"help": "step-by-step reasoning template"})
    momentum: bool = field(default=True, metadata={"help": "show earlier edits and their score changes"})
    history_size: int = field(default=3, metadata={"min": 1, "help": "earlier edits shown with momentum"})
    step_size: int | None = field(
        default=None, metadata={"min": 1, "help": "max words an edit may change (None: no limit)"}
    )
    n_children: int = field(default=2, metadata={"min": 1, "help": "children proposed per beam parent"})
    reasoning_max_tokens: int = field(default=192, metadata={"min": 1, "help": "length of the Step 1 analysis"})
    meta_prompt: MetaPromptStyle = field(
        default="paper",
        metadata={"help": "'paper': the reference two-turn meta-prompt; 'compact': one short turn per step"},
    )


def full_template(prompt: Prompt, *, instruction: str | None = None) -> str:
    """PE2's context specification: the user message the instruction sits in, each input shown as ``<field>``."""
    fields = sorted(prompt.prompt_template.input_variables)
    return prompt.prompt_template.render(
        instruction=prompt.instruction if instruction is None else instruction,
        inputs={f: f"<{f}>" for f in fields},
        demos=prompt.demo_variables(),
    )


@register_optimizer("pe2")
class PE2Optimizer(BeamSearchOptimizer):
    """PE2: analyse failures with a structured meta-prompt, then edit the prompt (within a step size)."""

    Config = PE2Config
    config: PE2Config
    uses_failures = True

    def step_knobs(self) -> dict[str, int]:
        return {"n_children": 1}

    def step_shape(self, n_parents: int, config: SearchConfig) -> tuple[int, int]:
        """Children per parent, each an analysis of the failures and then the edit."""
        assert isinstance(config, PE2Config)
        return n_parents * config.n_children, 2 * n_parents * config.n_children

    def children(self, parents: Sequence[TrialRecord], config: SearchConfig) -> list[Prompt]:
        """``n_children`` per parent, each from a fresh batch of its failures: Step 1 analyses them (one call),
        Step 2 writes the new prompt with the analysis as the assistant's turn (a second call)."""
        assert isinstance(config, PE2Config)
        c = config
        jobs: list[tuple[TrialRecord, list[Failure]]] = []
        for parent in parents:
            for _ in range(c.n_children):
                failures = self.failure_batch(parent)
                if failures:
                    jobs.append((parent, failures))
        if not jobs:
            return []
        name = META_PROMPTS[c.meta_prompt]
        variables = [self.meta_variables(parent, failures, c) for parent, failures in jobs]
        # Step 1: reasoning about the failures
        analyses = self.proposer.ask_chat(
            [render_conversation(name, **v, reasoning=None) for v in variables], max_tokens=c.reasoning_max_tokens
        )
        # Step 2: the refined prompt, after the analysis
        step2 = [render_conversation(name, **v, reasoning=a.strip()) for v, a in zip(variables, analyses, strict=True)]
        replies = self.proposer.ask_chat(step2)
        out: list[Prompt] = []
        for (parent, failures), analysis, conv, reply in zip(jobs, analyses, step2, replies, strict=True):
            meta = {"failures": [f.example.id for f in failures], "reasoning": analysis.strip()}
            out += self.screen(
                [reply],
                parent.prompt,
                origin="pe2",
                step_size=c.step_size,
                cue=ANSWER_CUES[c.meta_prompt],
                metas=[meta],
                meta_prompts=[conv],
            )
        return out

    def meta_variables(self, parent: TrialRecord, failures: Sequence[Failure], config: PE2Config) -> dict[str, Any]:
        """The template variables of ``pe2.jinja`` / ``pe2_compact.jinja`` for one child of ``parent``."""
        c = config
        history = None
        if c.momentum:
            history = [
                {**asdict(e), "score_before": f"{e.score_before:.2f}", "score_after": f"{e.score_after:.2f}"}
                for e in lineage(parent, self.ctx.history, limit=c.history_size)
            ]
        return {
            "task_description": c.task_description,
            "context": c.context,
            "reasoning_template": c.reasoning_template,
            "prompt": parent.prompt.instruction,
            "full_template": full_template(parent.prompt) if c.context else "",
            "failures": [f.as_dict() for f in failures],
            "history": history,
            "current_score": f"{parent.mean:.2f}",
            "step_size": c.step_size,
            "max_words": c.max_words,
        }
