"""Talking to the proposer model: meta-prompts, the examples and failures they show, and the client wrapper.

Meta-prompts are Jinja2 files in ``promptopt/optimizers/meta_prompts/`` rendered in the sandbox
(:func:`render_meta_prompt`; :func:`render_conversation` for multi-turn ones, where ``<|user|>`` /
``<|assistant|>`` lines of the file start messages; rendered variables never do). :class:`Proposer` sends them
with a fresh, deterministic sample index per request, so a rerun with the same seed replays from the cache.
What comes back is untrusted text: :mod:`promptopt.optimizers.screening` turns it into candidates.
"""

from __future__ import annotations

import random
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from promptopt.core.data import Example
from promptopt.core.messages import Message
from promptopt.core.template import render_string
from promptopt.models.base import GenerationRequest

if TYPE_CHECKING:
    from promptopt.models.client import ModelClient
    from promptopt.run.history import TrialRecord

PROPOSER_SYSTEM = "You are an expert prompt engineer. Reply with exactly what is asked, nothing else."


# -- meta-prompt files ----------------------------------------------------------------------------------------
@cache
def meta_prompt_source(name: str) -> str:
    folder = resources.files("promptopt.optimizers").joinpath("meta_prompts")
    return folder.joinpath(f"{name}.jinja").read_text(encoding="utf-8")


def render_meta_prompt(name: str, **variables: Any) -> str:
    """A single-turn meta-prompt as text."""
    return render_string(meta_prompt_source(name), variables, name=f"meta_prompts/{name}.jinja").strip()


_ROLE_MARK = re.compile(r"<\|(system|user|assistant)\|>")
_SECRET = secrets.token_hex(8)
"""What the file's role markers carry while the variables render (per process), so a ``<|user|>`` in the
variables (data rows, instructions, the proposer's own replies) stays text and cannot start a message."""
_TURN = re.compile(rf"<\|{_SECRET}:(system|user|assistant)\|>")


@cache
def _conversation_source(name: str) -> str:
    return _ROLE_MARK.sub(lambda m: f"<|{_SECRET}:{m[1]}|>", meta_prompt_source(name))


def render_conversation(name: str, **variables: Any) -> tuple[Message, ...]:
    """Render a meta-prompt into chat messages: a ``<|user|>`` or ``<|assistant|>`` in the file starts a message.

    Text before the first marker is a user message; adjacent messages of one role are merged and runs
    of blank lines collapsed, so ``{% if %}`` blocks can drop whole turns. Markers come from the file only:
    they are swapped for a secret before the variables are rendered in.
    """
    source = _conversation_source(name)
    parts = _TURN.split(render_string(source, variables, name=f"meta_prompts/{name}.jinja").strip())
    turns = [("user", parts[0]), *zip(parts[1::2], parts[2::2], strict=True)]
    out: list[Message] = []
    for role, raw in turns:
        content = re.sub(r"\n{3,}", "\n\n", raw).strip()
        if not content:
            continue
        if out and out[-1].role == role:
            out[-1] = Message(role, f"{out[-1].content}\n\n{content}")
        else:
            out.append(Message(role, content))
    return tuple(out)


# -- what meta-prompts show -----------------------------------------------------------------------------------
def format_example(ex: Example | Mapping[str, Any], *, answer: str | None = None) -> dict[str, Any]:
    """A demo as the meta-prompts show it: ``input`` text (one line per field) and ``output``."""
    inputs = ex.inputs if isinstance(ex, Example) else ex
    text = str(next(iter(inputs.values()))) if len(inputs) == 1 else "\n".join(f"{k}: {v}" for k, v in inputs.items())
    return {
        "input": text,
        "output": answer if answer is not None else (ex.answer if isinstance(ex, Example) else ""),
    }


@dataclass(frozen=True)
class Failure:
    """An example the prompt got wrong, as meta-prompts show it."""

    example: Example
    prediction: str | None
    error: str | None

    def as_dict(self) -> dict[str, Any]:
        shown = format_example(self.example)
        return {**shown, "prediction": self.prediction if self.prediction is not None else f"(no answer: {self.error})"}


def sample_failures(record: TrialRecord, examples: Sequence[Example], k: int, rng: random.Random) -> list[Failure]:
    """Up to ``k`` failures of ``record`` on ``examples`` (API errors excluded), sampled with ``rng`` in a stable
    order."""
    if record.result is None or k <= 0:
        return []
    by_id = {ex.id: ex for ex in examples}
    wrong = [r for r in record.result.failures() if r.example_id in by_id]
    picked = rng.sample(wrong, min(k, len(wrong)))
    return [Failure(by_id[r.example_id], r.prediction, r.error) for r in picked]


# -- the client -----------------------------------------------------------------------------------------------
class Proposer:
    """Sends meta-prompts to the proposer model; every sample gets a fresh, deterministic sample index
    so reruns with the same seed replay from the cache. ``before_call`` (e.g. :meth:`RunContext.stop_if_asked
    <promptopt.run.context.RunContext.stop_if_asked>`) runs before each request: a stopped run asks nothing more."""

    def __init__(
        self,
        client: ModelClient,
        *,
        temperature: float,
        max_tokens: int,
        system: str = PROPOSER_SYSTEM,
        before_call: Callable[[], None] | None = None,
    ) -> None:
        self.client = client
        self.before_call = before_call
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system = system
        self._sample = 0

    def ask(self, prompts: Sequence[str]) -> list[str]:
        """One reply per single-turn meta-prompt (failed calls give an empty reply, which screening rejects)."""
        return self.ask_chat([(Message("user", p),) for p in prompts])

    def ask_chat(self, conversations: Sequence[Sequence[Message]], *, max_tokens: int | None = None) -> list[str]:
        """One reply per multi-turn meta-prompt (the system message is prepended)."""
        if self.before_call is not None:
            self.before_call()
        requests = []
        for conv in conversations:
            self._sample += 1
            requests.append(
                GenerationRequest(
                    messages=(Message("system", self.system), *conv),
                    max_tokens=max_tokens or self.max_tokens,
                    temperature=self.temperature,
                    sample=self._sample,
                )
            )
        return [c.text if not c.error else "" for c in self.client.generate(requests)]
