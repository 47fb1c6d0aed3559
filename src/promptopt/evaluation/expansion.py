"""The one hook between a candidate and the evaluator: what a prompt expands to for a batch of examples.

A plain prompt is one chat per example (its demos inline or as chat turns, :meth:`Prompt.render`). An In-Context
Sampling prompt is K chats per example whose answers are aggregated (:mod:`promptopt.prompts.ics`). A soft prompt
is the same chats sent to the model with the candidate's virtual tokens (:mod:`promptopt.models.soft`). The
evaluator asks :func:`expand` and never looks at those fields itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from promptopt.core.candidate import Prompt
from promptopt.core.data import Example
from promptopt.core.messages import Messages
from promptopt.core.sampling import Aggregation
from promptopt.models.client import ModelClient
from promptopt.prompts.ics import render_all


@dataclass(frozen=True)
class Expansion:
    groups: list[tuple[Messages, ...]]
    """Per example, the chats of its sub-prompts (one for a plain prompt)."""
    client: ModelClient
    """The model as this prompt needs it (with a soft prompt's virtual tokens)."""
    temperature: float = 0.0
    """Sampling temperature of the sub-prompts' generations (> 0: K samples, self-consistency)."""
    aggregation: Aggregation = "vote"
    """How K sub-prompt answers become one."""


def expand(prompt: Prompt, examples: Sequence[Example], client: ModelClient) -> Expansion:
    """What ``prompt`` asks of ``client`` for ``examples``."""
    if prompt.soft_prompt is not None:
        from promptopt.models.soft import soft_prompted

        client = soft_prompted(client, prompt.soft_prompt)
    groups = render_all(prompt, examples)
    if prompt.ics is None:
        return Expansion(groups=groups, client=client)
    return Expansion(
        groups=groups, client=client, temperature=prompt.ics.temperature, aggregation=prompt.ics.aggregation
    )
