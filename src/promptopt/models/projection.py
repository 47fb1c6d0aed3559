"""The cheap baseline for a text prompt from a soft prompt: each virtual token projected to its nearest vocab token.

:func:`project_soft_prompt` replaces every virtual-token embedding of a trained soft prompt
(:mod:`promptopt.models.soft`) by the vocabulary token whose input embedding is the most cosine-similar (special and
non-printable tokens excluded, :mod:`promptopt.models.hf.vocab`), and decodes them to text; :func:`projected_prompt`
puts that text where a text prompt can hold it, so it is evaluated like any other prompt. What this loses against
the soft prompt itself is the measure of how far a soft prompt is from any discrete one (Khashabi et al. 2022,
"Prompt Waywardness").
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from promptopt.core.candidate import Prompt
from promptopt.models.hf import HFModel
from promptopt.models.hf.vocab import allowed_tokens, nearest_tokens, round_trips
from promptopt.models.soft import load_soft_prompt

Placement = Literal["system", "instruction"]


@dataclass(frozen=True)
class Projection:
    """A soft prompt's nearest tokens: their ids, text, cosine similarity per virtual token, and whether the text
    encodes back to exactly these ids."""

    ids: list[int]
    text: str
    cosine: list[float]
    round_trips: bool

    @property
    def mean_cosine(self) -> float:
        return sum(self.cosine) / len(self.cosine)


def project_soft_prompt(base: HFModel, soft_prompt: str | Path | Any) -> Projection:
    """The nearest-token projection of a soft prompt (an adapter directory or an embeddings tensor) on ``base``."""
    embeddings = load_soft_prompt(soft_prompt).embeddings if isinstance(soft_prompt, str | Path) else soft_prompt
    table = base.model.get_input_embeddings().weight
    ids, cosine = nearest_tokens(table, embeddings, allowed_tokens(base.tokenizer, table.shape[0]))
    return Projection(ids, base.tokenizer.decode(ids), cosine, round_trips(base.tokenizer, ids))


def projected_prompt(prompt: Prompt, projection: Projection, *, where: Placement = "system") -> Prompt:
    """``prompt`` without its soft prompt, the projected text in its place: at the start of the system message
    (nearest to where the virtual tokens sat: before the whole chat) or before the instruction."""
    text = projection.text.strip()
    if where == "system":
        changed = dataclasses.replace(prompt, system=f"{text}\n{prompt.system}" if prompt.system else text)
    else:
        changed = dataclasses.replace(prompt, instruction=f"{text}\n{prompt.instruction}")
    return dataclasses.replace(changed, soft_prompt=None, parents=(prompt.id,), origin="soft_prompt:projected")
