"""Fake models that speak DSPy's ChatAdapter format, for tests of the DSPy interop on the toy task.

:func:`dspy_toy_model` answers a DSPy request for a signature with a ``word`` input (its last user message ends
"Respond with the corresponding output fields, starting with the field `[[ ## answer ## ]]` …", or, from DSPy's
JSONAdapter, "Respond with a JSON object …") by the toy task's rule — the instruction is in DSPy's system message,
each demo is a user/assistant turn — and writes the answer inside ``[[ ## field ## ]]`` markers (or as JSON). Any
other DSPy signature (MIPROv2's and COPRO's instruction proposals, dataset summaries) gets the scripted proposals,
by sample index, in every output field it asks for, and so does a plain prompt (GEPA's reflection). A request in
promptopt's own format (a ``Word: …`` line: the common evaluator's) gets the toy rule's plain answer. With
``markers=False`` it answers DSPy without the markers, as a small model does, so every DSPy parse fails
(``AdapterParseError``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from promptopt import testing
from promptopt.models.base import GenerationRequest
from promptopt.models.fake import FakeModel, last_user

_FIELD = re.compile(r"\[\[ ## (\w+) ## \]\]\n(.*?)(?=\n\n\[\[ ## |\n\nRespond with|\Z)", re.DOTALL)
_WORD_LINE = re.compile(r"^Word: \S+\s*$", re.MULTILINE)
_RESPOND = "Respond with the corresponding output fields"
_RESPOND_JSON = "Respond with a JSON object in the following order of fields: "
DSPY_TOY_PROPOSALS = (testing.TOY_BEST_INSTRUCTION, testing.TOY_PARTIAL_INSTRUCTION, "Say the word.")
"""The proposals by sample index (the first for temperature 0): the optimum first."""


def dspy_fields(message: str) -> dict[str, str]:
    """The ``[[ ## name ## ]]`` fields of a DSPy message, by name."""
    return {name: value.strip() for name, value in _FIELD.findall(message)}


def requested_outputs(message: str) -> tuple[list[str], bool]:
    """The output fields a DSPy request asks for (empty: not a DSPy request), and whether as JSON (JSONAdapter)."""
    _, found, tail = message.partition(_RESPOND_JSON)
    if found:
        return re.findall(r"`(\w+)`", tail.split("\n")[0]), True
    _, found, tail = message.partition(_RESPOND)
    return ([f for f in re.findall(r"\[\[ ## (\w+) ## \]\]", tail) if f != "completed"] if found else []), False


def dspy_toy_model(
    proposals: Sequence[str] = DSPY_TOY_PROPOSALS, *, markers: bool = True, name: str = "fake:dspy-toy"
) -> FakeModel:
    """The toy rule model for DSPy requests (and promptopt's); see the module docstring."""

    def proposal(request: GenerationRequest) -> str:
        return proposals[max(request.sample - 1, 0) % len(proposals)] if proposals else ""

    def fn(request: GenerationRequest) -> str:
        user = last_user(request.messages)
        system = next((m.content for m in request.messages if m.role == "system"), "")
        outputs, as_json = requested_outputs(user)
        if not outputs:  # promptopt's evaluator (a "Word: …" line), or a plain prompt (GEPA's reflection)
            return testing.toy_answer(user) if _WORD_LINE.search(user) else proposal(request)
        fields = dspy_fields(user)
        if "word" in fields:  # the task's signature (word -> one output field)
            demos = [m for m in request.messages[:-1] if m.role == "user" and "[[ ## word ## ]]" in m.content]
            rendered = "\n".join([system, *("Word: demo" for _ in demos), f"Word: {fields['word']}"])
            values = {outputs[0]: testing.toy_answer(rendered)}
        else:
            values = dict.fromkeys(outputs, proposal(request))
        if not markers:
            return "\n".join(values.values())
        if as_json:
            return json.dumps(values)
        return "".join(f"[[ ## {k} ## ]]\n{v}\n\n" for k, v in values.items()) + "[[ ## completed ## ]]"

    return FakeModel(fn=fn, name=name)
