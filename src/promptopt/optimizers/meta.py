"""Machinery shared by optimizers that ask a proposer model to write prompts.

Meta-prompts are Jinja2 files in ``promptopt/optimizers/meta_prompts/`` rendered in the sandbox.
Proposer output is untrusted text from a possibly tiny model: :func:`extract_instruction` pulls out a
usable instruction or says why it rejects it.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from promptopt.client import ModelClient
from promptopt.data import Example
from promptopt.models.base import GenerationRequest, Message
from promptopt.template import PromptTemplate, render_string

if TYPE_CHECKING:
    from promptopt.history import TrialRecord

PROPOSER_SYSTEM = "You are an expert prompt engineer. Reply with exactly what is asked, nothing else."


@cache
def meta_prompt_source(name: str) -> str:
    return resources.files("promptopt.optimizers").joinpath("meta_prompts", f"{name}.jinja").read_text(encoding="utf-8")


def render_meta_prompt(name: str, **variables: Any) -> str:
    return render_string(meta_prompt_source(name), variables, name=f"meta_prompts/{name}.jinja").strip()


def format_example(ex: Example | Mapping[str, Any], *, answer: str | None = None) -> dict[str, Any]:
    """A demo as the meta-prompts show it: ``input`` text (one line per field) and ``output``."""
    inputs = ex.inputs if isinstance(ex, Example) else ex
    text = str(next(iter(inputs.values()))) if len(inputs) == 1 else "\n".join(f"{k}: {v}" for k, v in inputs.items())
    return {
        "input": text,
        "output": answer if answer is not None else (ex.answer if isinstance(ex, Example) else ""),
    }


_LEADS = re.compile(
    r"^\s*(?:the\s+)?(?:new\s+|improved\s+|revised\s+)?(?:instruction|prompt)\s*(?:was|is)?\s*[:\-–]?\s*",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Extraction:
    instruction: str | None
    reason: str | None = None
    """Why the output was rejected (``empty``, ``too_long``, ``template_syntax``, ``echoes_input``)."""


def extract_instruction(
    text: str, *, max_words: int = 80, forbidden: Iterable[str] = (), allow_template_syntax: bool = False
) -> Extraction:
    """Pull one instruction out of a proposer's reply.

    Takes the text inside ``<prompt>…</prompt>`` or the first non-empty paragraph, strips lead-ins
    ("The instruction was:", quotes, list markers) and rejects empty, over-long, template-breaking output
    or output that merely copies one of the ``forbidden`` strings (e.g. a demo input).
    """
    m = re.search(r"<prompt>(.*?)(?:</prompt>|$)", text, flags=re.DOTALL | re.IGNORECASE)
    body = m.group(1) if m else text
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", body) if p.strip()]
    candidate = paragraphs[0] if paragraphs else ""
    candidate = _LEADS.sub("", candidate)
    candidate = re.sub(r"^\s*(?:[-*•]|\d+[.)])\s+", "", candidate)
    candidate = " ".join(candidate.split()).strip().strip("\"'`“”‘’").strip()
    if not candidate or not re.search(r"[A-Za-z]", candidate):
        return Extraction(None, "empty")
    if len(candidate.split()) > max_words:
        return Extraction(None, "too_long")
    if not allow_template_syntax and re.search(r"\{\{|\{%|\}\}|%\}", candidate):
        return Extraction(None, "template_syntax")
    norm = candidate.lower()
    if any(norm == str(f).strip().lower() for f in forbidden if str(f).strip()):
        return Extraction(None, "echoes_input")
    return Extraction(candidate)


def check_template(template: str, input_fields: Iterable[str]) -> str | None:
    """Why a proposed template cannot be used with the task's inputs, or None if it can."""
    try:
        PromptTemplate(template).check_inputs(input_fields)
    except ValueError as exc:
        return str(exc)
    return None


class Proposer:
    """Sends meta-prompts to the proposer model; every sample gets a fresh, deterministic sample index
    so reruns with the same seed replay from the cache."""

    def __init__(
        self, client: ModelClient, *, temperature: float, max_tokens: int, system: str = PROPOSER_SYSTEM
    ) -> None:
        self.client = client
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system = system
        self._sample = 0

    def ask(self, prompts: Sequence[str]) -> list[str]:
        """One reply per meta-prompt (failed calls give an empty reply, which extraction rejects)."""
        requests = []
        for p in prompts:
            self._sample += 1
            requests.append(
                GenerationRequest(
                    messages=(Message("system", self.system), Message("user", p)),
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                    sample=self._sample,
                )
            )
        return [c.text if not c.error else "" for c in self.client.generate(requests)]


def word_edit_distance(a: str, b: str) -> int:
    """Word-level Levenshtein distance: how many words an edit inserted, deleted or replaced."""
    x, y = a.split(), b.split()
    prev = list(range(len(y) + 1))
    for i, wx in enumerate(x, 1):
        cur = [i]
        for j, wy in enumerate(y, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (wx != wy)))
        prev = cur
    return prev[-1]


@dataclass(frozen=True)
class Failure:
    """A dev example the prompt got wrong, as meta-prompts show it."""

    example: Example
    prediction: str | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        shown = format_example(self.example)
        return {**shown, "prediction": self.prediction if self.prediction is not None else f"(no answer: {self.error})"}


def sample_failures(record: TrialRecord, examples: Sequence[Example], k: int, rng: random.Random) -> list[Failure]:
    """Up to ``k`` failures of ``record`` (API errors excluded), sampled with ``rng`` in a stable order."""
    if record.result is None or k <= 0:
        return []
    by_id = {ex.id: ex for ex in examples}
    wrong = [r for r in record.result.failures() if r.example_id in by_id]
    picked = rng.sample(wrong, min(k, len(wrong)))
    return [Failure(by_id[r.example_id], r.prediction, r.error) for r in picked]
