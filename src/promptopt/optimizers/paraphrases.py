"""Semantically equivalent instructions: the proposer's rewrites (``meta_prompts/paraphrase.jinja``) and the rule-based
set (:mod:`promptopt.prompts.paraphrase`), screened for equivalence.

A proposer reply goes through the meta family's screening first (:func:`~promptopt.optimizers.screening.screen_reply`:
extraction, duplicates, placeholders, chatter, an echoed meta-prompt), then every candidate, rule-based ones included,
through :func:`~promptopt.prompts.equivalence.why_not_equivalent` (label words, answer-format constraints, negation,
length, embedding similarity). :func:`paraphrase_set` is what ``promptopt robustness`` and the robust soft prompt use.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from promptopt.core.messages import Message
from promptopt.optimizers.proposer import Proposer, render_meta_prompt
from promptopt.optimizers.screening import screen_reply
from promptopt.prompts.equivalence import Equivalence, why_not_equivalent
from promptopt.prompts.paraphrase import rule_paraphrases

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt

Source = Literal["rules", "proposer", "both"]
MAX_WORDS = 80
EQUIVALENCE = Equivalence()
"""The default bounds."""


@dataclass(frozen=True)
class Paraphrase:
    text: str
    source: str
    """``proposer`` or the rule(s) that wrote it (``synonyms+question``)."""


@dataclass
class ParaphraseSet:
    """Screened paraphrases of one instruction, and how many candidates each check rejected."""

    instruction: str
    paraphrases: list[Paraphrase] = field(default_factory=list)
    rejected: Counter[str] = field(default_factory=Counter)
    proposed: int = 0

    @property
    def texts(self) -> list[str]:
        return [p.text for p in self.paraphrases]


def screen_paraphrases(
    parent: Prompt,
    candidates: Sequence[tuple[str, str]],
    *,
    labels: Sequence[str] = (),
    bounds: Equivalence = EQUIVALENCE,
    replies: bool = False,
    meta_prompt: Sequence[Message] | None = None,
    into: ParaphraseSet | None = None,
) -> ParaphraseSet:
    """Screen ``(source, text)`` candidates rephrasing ``parent``'s instruction; ``replies``: they are raw proposer
    replies, screened by :func:`screen_reply` first. Accepted ones are appended to ``into`` (default: a new set)."""
    out = into if into is not None else ParaphraseSet(parent.instruction)
    for source, text in candidates:
        seen = {parent.instruction, *out.texts}
        instruction: str | None = text
        reason = None
        if replies:
            s = screen_reply(text, parent, seen=seen, max_words=MAX_WORDS, meta_prompt=meta_prompt)
            instruction, reason = s.instruction, s.reason
        elif text in seen:
            reason = "duplicate"
        if instruction is not None and reason is None:
            reason = why_not_equivalent(parent.instruction, instruction, labels=labels, bounds=bounds)
        if reason is not None or instruction is None:
            out.rejected[reason or "invalid"] += 1
            continue
        out.paraphrases.append(Paraphrase(instruction, source))
    return out


def paraphrase_set(
    prompt: Prompt,
    n: int,
    *,
    labels: Sequence[str] = (),
    proposer: Proposer | None = None,
    n_proposals: int = 0,
    source: Source = "both",
    bounds: Equivalence = EQUIVALENCE,
    seed: int = 0,
) -> ParaphraseSet:
    """Up to ``n`` screened paraphrases of ``prompt``'s instruction: the proposer's first (``n_proposals`` asks, when
    ``source`` allows and a ``proposer`` is given), then a seeded sample of the rule-based ones to fill up."""
    out = ParaphraseSet(prompt.instruction)
    if source != "rules" and proposer is not None and n_proposals > 0:
        meta = render_meta_prompt("paraphrase", instruction=prompt.instruction)
        replies = proposer.ask([meta] * n_proposals)
        out.proposed = len(replies)
        screen_paraphrases(
            prompt,
            [("proposer", r) for r in replies],
            labels=labels,
            bounds=bounds,
            replies=True,
            meta_prompt=(Message("user", meta),),
            into=out,
        )
    if source != "proposer":
        rules = rule_paraphrases(prompt.instruction, labels=labels)
        random.Random(f"paraphrases:{seed}").shuffle(rules)
        screen_paraphrases(prompt, rules, labels=labels, bounds=bounds, into=out)
    out.paraphrases = out.paraphrases[:n]
    return out
