"""Instruction induction from demonstrations: APE's forward generation (Zhou et al., 2023, "Large Language Models
Are Human-Level Prompt Engineers", §2.1). The proposer sees input→output pairs and writes the instruction that
would produce them (``meta_prompts/ape_induce.jinja``). ``ape`` starts its search from these; ``structure_search``
adds them to its instruction candidates.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from promptopt.core.data import Example
from promptopt.optimizers.proposer import Proposer, format_example, render_meta_prompt


def induction_prompts(examples: Sequence[Example], n: int, *, n_demos: int, rng: random.Random) -> list[str]:
    """``n`` induction meta-prompts, each showing a fresh random subset of ``n_demos`` of ``examples`` (drawn
    with ``rng``, one subset per meta-prompt, in order)."""
    pool = list(examples)
    k = min(n_demos, len(pool))
    return [render_meta_prompt("ape_induce", demos=[format_example(d) for d in rng.sample(pool, k)]) for _ in range(n)]


def induce(proposer: Proposer, meta_prompts: Sequence[str]) -> list[str]:
    """The proposer's replies to induction meta-prompts (one sample each), to screen before use."""
    return proposer.ask(meta_prompts)
