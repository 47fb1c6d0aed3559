"""``opro``: Optimization by PROmpting (Yang, Wang, Lu, Liu, Le, Zhou, Chen; ICLR 2024, "Large Language Models
as Optimizers", arXiv:2309.03409). Meta-prompt after google-deepmind/opro ``gen_meta_prompt``
(instructions only; ``meta_prompts/opro.jinja``).

One step: the meta-prompt lists the ``beam_size`` best instructions so far with their dev scores (0–100,
rounded), sorted ascending so the best comes last, then ``n_exemplars`` train problems drawn afresh,
and asks for a new instruction that scores higher, between ``<INS>`` and ``</INS>``. ``n_samples``
replies are sampled from that one meta-prompt (the paper samples 8 at temperature 1.0).

Mapping choices:

- Scores are full-dev accuracies from the run history (the paper scores on a train subset); raced-out
  candidates are not listed, because a minibatch score is not comparable with a full-dev one.
- Each exemplar is the task's own template rendered with ``<INS>`` in the instruction's place, which is
  OPRO's "instruction position" made exact for any template.
- New instructions are raced on a dev minibatch before full dev, like the rest of the family
  (:class:`~promptopt.optimizers.beam.BeamSearchOptimizer`); each is recorded as a child of the best
  instruction so far (whose template and demos it inherits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from promptopt.optimizers.base import register_optimizer
from promptopt.optimizers.beam import BeamSearchOptimizer, SearchConfig
from promptopt.optimizers.proposer import render_conversation

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.run.history import TrialRecord


@dataclass(frozen=True, kw_only=True)
class OPROConfig(SearchConfig):
    beam_size: int = field(default=20, metadata={"min": 1, "help": "scored instructions shown in the meta-prompt"})
    n_steps: int = field(default=6, metadata={"min": 1, "help": "optimization steps"})
    n_samples: int = field(default=4, metadata={"min": 1, "help": "instructions sampled per step"})
    n_exemplars: int = field(default=3, metadata={"min": 0, "help": "train problems shown per step"})
    temperature: float = field(default=1.0, metadata={"min": 0.0, "help": "proposer sampling temperature"})


@register_optimizer("opro")
class OPROOptimizer(BeamSearchOptimizer):
    """OPRO: show the scored trajectory of instructions and ask for a better one."""

    Config = OPROConfig
    config: OPROConfig

    def step_knobs(self) -> dict[str, int]:
        return {"n_samples": 1}

    def step_shape(self, n_parents: int, config: SearchConfig) -> tuple[int, int]:
        """Replies to one meta-prompt, however many parents it shows."""
        assert isinstance(config, OPROConfig)
        return config.n_samples, config.n_samples

    def children(self, parents: Sequence[TrialRecord], config: SearchConfig) -> list[Prompt]:
        """One meta-prompt — the scored instructions ascending, fresh train problems — and ``n_samples`` replies."""
        assert isinstance(config, OPROConfig)
        c = config
        best = parents[0].prompt
        shown = sorted(parents, key=lambda r: (r.mean, -r.trial))
        train = list(self.ctx.task.train)
        exemplars = self.ctx.rng.sample(train, min(c.n_exemplars, len(train)))
        meta_prompt = render_conversation(
            "opro",
            instructions=[{"text": r.prompt.instruction, "score": round(100 * r.mean)} for r in shown],
            problems=[
                {
                    "text": best.prompt_template.render(
                        instruction="<INS>", inputs=ex.inputs, demos=best.demo_variables()
                    ),
                    "answer": ex.answer,
                }
                for ex in exemplars
            ],
        )
        replies = self.proposer.ask_chat([meta_prompt] * c.n_samples)
        meta = {"shown": [r.prompt.id for r in shown]}
        n = len(replies)
        tags = ("INS", "prompt")
        return self.screen(replies, best, origin="opro", tags=tags, metas=[meta] * n, meta_prompts=[meta_prompt] * n)
