"""Is a rewrite of an instruction equivalent to it? The checks that keep a paraphrase set honest.

A rephrasing-robustness score only means something if every paraphrase asks for the same thing.
:func:`why_not_equivalent` rejects, in this order, a rewrite that changes which of the task's label words it names
or the options of an "a, b or c" list (``labels_changed``), that drops or adds an answer-format constraint ("only",
"one word", a quoted string, a number, "step by step" …: ``constraints_changed``), that flips a negation
(``negation_changed``), whose length is out of bounds (``length``), or whose sentence embedding
(:mod:`promptopt.prompts.embeddings`: MiniLM when installed, TF-IDF otherwise) is too far from the original's
(``dissimilar``: a different task).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from promptopt.prompts.embeddings import Embedder, dot, get_embedder

CONSTRAINTS = {
    "only": r"\bonly\b|\bjust\b|\bsolely\b|\bnothing else\b",
    "one_word": r"\b(?:one|single|1)[ -]word\b",
    "one_letter": r"\b(?:one|single) letter\b",
    "lowercase": r"\blower[ -]?case\b",
    "uppercase": r"\bupper[ -]?case\b|\bcapital letters\b",
    "json": r"\bjson\b",
    "reasoning": r"\bstep[ -]by[ -]step\b|\bexplain\b|\breason(?:ing)?\b|\bjustify\b",
    "brief": r"\bbrief(?:ly)?\b|\bconcise(?:ly)?\b|\bshort\b",
    "options": r"\boption\b|\bchoices?\b|\bletter\b",
}
"""Answer-format constraints, each a regular expression of its phrasings (synonyms count as the same constraint)."""
NEGATIONS = re.compile(r"\b(?:not|never|no|none|neither|nor|without|avoid|don't|doesn't|isn't|aren't|cannot|can't)\b")
MIN_SIMILARITY = {"minilm": 0.6, "tfidf": 0.25}
"""Default similarity floors: MiniLM cosines of paraphrases are high; TF-IDF over two texts is lexical and lower."""


@dataclass(frozen=True, kw_only=True)
class Equivalence:
    """The bounds :func:`why_not_equivalent` checks."""

    min_length: float = 0.5
    """A rewrite has at least this fraction of the original's words (and at most its inverse)."""
    min_similarity: float | None = None
    """Embedding cosine floor (None: :data:`MIN_SIMILARITY` of the embedder)."""
    embedder: str = "auto"


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def label_mentions(text: str, labels: Sequence[str]) -> frozenset[str]:
    """The ``labels`` named in ``text`` (whole words, any case)."""
    low = text.lower()
    return frozenset(lab for lab in labels if re.search(rf"(?<!\w){re.escape(lab.lower())}(?!\w)", low))


_ALTERNATIVES = re.compile(r"[\w-]+(?:, [\w-]+)*,? or [\w-]+")


def alternatives(text: str) -> frozenset[str]:
    """The words of ``text``'s "a, b or c" lists: the answer options an instruction names, labels or not."""
    return frozenset(w for m in _ALTERNATIVES.findall(text.lower()) for w in re.split(r",? or |, ", m))


def constraints(text: str) -> frozenset[str]:
    """The answer-format constraints ``text`` states: :data:`CONSTRAINTS` names, quoted strings and numbers."""
    low = text.lower()
    found = {name for name, pattern in CONSTRAINTS.items() if re.search(pattern, low)}
    found |= {f"quoted:{q.lower()}" for q in re.findall(r"[\"“']([^\"”']{1,40})[\"”']", text)}
    found |= {f"number:{n}" for n in re.findall(r"\b\d+\b", low)}
    return frozenset(found)


def negations(text: str, labels: Sequence[str] = ()) -> int:
    """How many negation words ``text`` has (a label such as "no" is not one)."""
    keep = {lab.lower() for lab in labels}
    return sum(n for w, n in Counter(NEGATIONS.findall(text.lower())).items() if w not in keep)


def similarity(a: str, b: str, embedder: Embedder) -> float:
    va, vb = embedder.fit([a, b]).embed([a, b])
    return dot(va, vb)


def why_not_equivalent(
    original: str, rewrite: str, *, labels: Sequence[str] = (), bounds: Equivalence = Equivalence()
) -> str | None:
    """Why ``rewrite`` is not an equivalent rephrasing of ``original`` (the module docstring's reasons), or None."""
    if label_mentions(original, labels) != label_mentions(rewrite, labels) or (
        alternatives(original) != alternatives(rewrite)
    ):
        return "labels_changed"
    if constraints(original) != constraints(rewrite):
        return "constraints_changed"
    if negations(original, labels) != negations(rewrite, labels):
        return "negation_changed"
    n, m = len(_words(original)), len(_words(rewrite))
    if not (bounds.min_length * n <= m <= max(n / bounds.min_length, n + 6)):
        return "length"
    embedder = get_embedder(bounds.embedder)
    floor = bounds.min_similarity if bounds.min_similarity is not None else MIN_SIMILARITY[embedder.name]
    if similarity(original, rewrite, embedder) < floor:
        return "dissimilar"
    return None
