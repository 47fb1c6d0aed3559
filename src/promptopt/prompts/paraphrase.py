"""Rule-based rephrasings of an instruction (no model): the cheap half of the rephrasing-robustness analysis.

Sun et al. (2023, "Evaluating the Zero-shot Robustness of Instruction-tuned Language Models") show that
semantically equivalent instructions give widely different scores. The rules here rewrite an instruction without
changing what it asks: question ↔ imperative form ("Is X a or b?" ↔ "Determine whether X is a or b."), synonym
swaps from a small fixed table (label words are never swapped), a politeness prefix, the order of its sentences,
and the verb of an "Answer with …" sentence (or such a sentence naming the labels, when there is none) — and pairs
of them, so a short instruction still has several. :mod:`promptopt.prompts.equivalence` screens them (and the
proposer's, :mod:`promptopt.optimizers.paraphrases`) for equivalence. :func:`paraphrase_variants` gives the
``robust`` objective of optimizers its variants over paraphrases, as
:func:`~promptopt.prompts.formats.format_variants` does over formats.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal

from promptopt.prompts.formats import format_variants

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.core.task import Task

RobustOver = Literal["formats", "paraphrases"]
"""The axis of optimizers' ``robust`` objective: FormatSpread formats or rule-based paraphrases of the instruction."""

SYNONYMS = {
    "classify": "categorize",
    "categorize": "classify",
    "determine": "decide",
    "decide": "determine",
    "identify": "find",
    "given": "provided",
    "provided": "given",
    "following": "given",
    "select": "choose",
    "choose": "select",
    "pick": "choose",
    "provide": "give",
    "give": "provide",
    "write": "produce",
    "produce": "write",
    "each": "every",
    "every": "each",
    "text": "passage",
    "passage": "text",
    "review": "critique",
    "statement": "claim",
    "input": "given text",
    "type": "kind",
    "kind": "type",
    "category": "class",
    "correct": "right",
    "output": "return",
    "return": "output",
}
"""One-word swaps (lower case); a word that is one of the task's labels is never swapped."""
POLITE = ("Please", "Kindly")
ANSWER_VERBS = ("Answer with", "Respond with", "Reply with")
_ANSWER = re.compile(r"\b(?:answer|respond|reply)(?:\s+only)?\s+with\b", re.IGNORECASE)
_QUESTION_LEAD = re.compile(r"^(?:can|could|would|will) you (?:please )?", re.IGNORECASE)
_QUESTION_WORD = re.compile(r"^(?:is|are|does|do|which|what|who|how|where|when|was|were|did)\b", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:] if s[:2] != s[:2].upper() else s


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def _first(text: str, change: Callable[[str], str | None]) -> str | None:
    """``text`` with its first sentence changed by ``change`` (None: not applicable)."""
    parts = _sentences(text)
    if not parts:
        return None
    new = change(parts[0])
    return " ".join([new, *parts[1:]]) if new is not None else None


def _question(sentence: str) -> str | None:
    """Imperative → question ("Classify …." → "Can you classify …?"); question → imperative
    ("Can you classify …?" → "Classify …."; "Is the sentiment …?" → "Tell whether the sentiment is …")."""
    if sentence.endswith("?"):
        if _QUESTION_LEAD.match(sentence):
            return _upper_first(_QUESTION_LEAD.sub("", sentence)[:-1].rstrip()) + "."
        if _QUESTION_WORD.match(sentence):
            return "Answer this question: " + sentence
        return None
    if _QUESTION_WORD.match(sentence) or _QUESTION_LEAD.match(sentence):
        return None
    return "Can you " + _lower_first(sentence.rstrip(".!")) + "?"


_YES_NO = re.compile(r"^(?:is|are) (?P<subject>.+?) (?P<options>[\w-]+(?:, [\w-]+)* or [\w-]+)\?$", re.IGNORECASE)


def _whether(sentence: str) -> str | None:
    """ "Is X a or b?" → "Determine whether X is a or b." (the question's alternatives kept)."""
    m = _YES_NO.match(sentence)
    if m is None:
        return None
    verb = sentence.split()[0].lower()
    return f"Determine whether {m['subject']} {verb} {m['options']}."


def _suffix(labels: Sequence[str]) -> Callable[[str], str | None]:
    """An "Answer with a or b." sentence naming the labels, for an instruction without one."""

    def change(text: str) -> str | None:
        if not labels or len(labels) > 6 or _ANSWER.search(text):
            return None
        options = ", ".join(labels[:-1]) + f" or {labels[-1]}" if len(labels) > 1 else labels[0]
        return f"{text.rstrip()} Answer with {options}."

    return change


def _polite(word: str) -> Callable[[str], str | None]:
    def change(sentence: str) -> str | None:
        if re.match(r"^(?:please|kindly)\b", sentence, re.IGNORECASE) or _QUESTION_WORD.match(sentence):
            return None
        if _QUESTION_LEAD.match(sentence):
            return None
        return f"{word} {_lower_first(sentence)}"

    return change


def synonym_swap(text: str, *, protected: Sequence[str] = ()) -> str | None:
    """``text`` with every word of :data:`SYNONYMS` swapped (keeping its capitalisation), or None if none is."""
    keep = {p.lower() for p in protected}

    def swap(m: re.Match[str]) -> str:
        word = m.group(0)
        new = SYNONYMS.get(word.lower())
        if new is None or word.lower() in keep:
            return word
        return _upper_first(new) if word[0].isupper() else new

    out = re.sub(r"[A-Za-z]+", swap, text)
    return out if out != text else None


def _reorder(text: str) -> str | None:
    """The first sentence moved to the end (``"Read X. Answer with A or B."`` → ``"Answer with A or B. Read X."``)."""
    parts = _sentences(text)
    return " ".join([*parts[1:], parts[0]]) if len(parts) > 1 else None


def _answer_verb(verb: str) -> Callable[[str], str | None]:
    def change(text: str) -> str | None:
        m = _ANSWER.search(text)
        if m is None or m.group(0).lower().startswith(verb.lower().split()[0]):
            return None
        only = " only" if " only" in m.group(0).lower() else ""
        new = verb.split()[0] + only + " with"
        return text[: m.start()] + (new if m.group(0)[0].isupper() else new.lower()) + text[m.end() :]

    return change


def rule_paraphrases(instruction: str, *, labels: Sequence[str] = ()) -> list[tuple[str, str]]:
    """``(rule, text)`` rephrasings of ``instruction`` by every rule and pairs of rules, distinct and different from
    the instruction, in a fixed order (single rules first). ``labels`` are never swapped for synonyms."""
    singles: list[tuple[str, Callable[[str], str | None]]] = [
        ("synonyms", lambda t: synonym_swap(t, protected=labels)),
        ("question", lambda t: _first(t, _question)),
        ("whether", lambda t: _first(t, _whether)),
        *((f"polite:{w.lower()}", (lambda t, w=w: _first(t, _polite(w)))) for w in POLITE),
        ("reorder", _reorder),
        *((f"answer:{v.split()[0].lower()}", _answer_verb(v)) for v in ANSWER_VERBS),
        ("suffix", _suffix(labels)),
    ]
    out: dict[str, str] = {}
    for n in (1, 2):
        for combo in itertools.combinations(singles, n):
            text: str | None = instruction
            for _, rule in combo:
                text = rule(text) if text is not None else None
            if text is not None and text != instruction and text not in out.values():
                out["+".join(name for name, _ in combo)] = text
    return list(out.items())


def paraphrase_variants(prompt: Prompt, task: Task, n: int, *, seed: int = 0) -> list[Prompt]:
    """``prompt`` under up to ``n`` instructions (the first as written, then a seeded sample of its
    :func:`rule_paraphrases`), for the ``robust`` objective over paraphrases."""
    rules = rule_paraphrases(prompt.instruction, labels=task.labels or ())
    picked = random.Random(f"paraphrases:{seed}:{prompt.instruction}").sample(rules, min(n - 1, len(rules)))
    return [prompt, *(prompt.with_instruction(text, origin="paraphrase", rule=rule) for rule, text in picked)]


def robust_variants(prompt: Prompt, task: Task, n: int, *, seed: int = 0, over: RobustOver = "formats") -> list[Prompt]:
    """The variants the ``robust`` objective scores ``prompt`` in: :func:`format_variants` or
    :func:`paraphrase_variants` (the first is ``prompt`` as written)."""
    if over == "paraphrases":
        return paraphrase_variants(prompt, task, n, seed=seed)
    return format_variants(prompt, task, n, seed=seed)
