"""promptopt's values as DSPy's (needs the ``dspy`` extra, imported late): the signature ``inputs -> answer``, a
``dspy.Example`` per :class:`Example` and a ``dspy.Predict`` with demos. :meth:`Prompt.to_dspy` builds on these;
:mod:`promptopt.core.dspy_interop` has the task-level conversions (both ways)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from promptopt.core._imports import require
from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError
from promptopt.core.template import PromptTemplate

OUTPUT = "answer"
"""The output field of the signatures made from promptopt tasks and prompts (a demo's answer is ``d.answer``)."""
ID_FIELD = "promptopt_id"
"""Where a ``dspy.Example`` made by :func:`to_dspy_example` keeps its example's id (a label, never an input)."""


class PromptLike(Protocol):
    """What :func:`to_dspy` reads of a :class:`~promptopt.core.candidate.Prompt`."""

    @property
    def instruction(self) -> str: ...
    @property
    def template(self) -> str: ...
    @property
    def demos(self) -> tuple[Example, ...]: ...
    @property
    def ics(self) -> object | None: ...
    @property
    def soft_prompt(self) -> str | None: ...


class TaskLike(Protocol):
    """What :func:`to_dspy` reads of a :class:`~promptopt.core.task.Task`."""

    @property
    def train(self) -> tuple[Example, ...]: ...
    @property
    def labels(self) -> tuple[str, ...] | None: ...


def dspy_module() -> Any:
    """``dspy``, or a :class:`~promptopt.core.exceptions.MissingDependencyError` naming the extra."""
    return require("dspy", extra="dspy", feature="DSPy interop")


def make_signature(instruction: str, inputs: Sequence[str], labels: Sequence[str] | None = None) -> Any:
    """``inputs -> answer`` with ``instruction``; a classification's answer field lists its labels."""
    dspy = dspy_module()
    desc = {"desc": "one of: " + ", ".join(labels)} if labels else {}
    fields = {name: dspy.InputField() for name in inputs}
    fields[OUTPUT] = dspy.OutputField(**desc)
    return dspy.Signature(fields, instruction)


def to_dspy_example(example: Example, inputs: Sequence[str]) -> Any:
    """``example`` as a ``dspy.Example``: its ``inputs`` fields, ``answer`` (the canonical answer) and its id."""
    fields = {name: example.inputs[name] for name in inputs}
    return dspy_module().Example(**fields, **{OUTPUT: example.answer, ID_FIELD: example.id}).with_inputs(*inputs)


def input_names(template: str, example: Example | None = None) -> tuple[str, ...]:
    """A template's input variables in ``example``'s column order (else sorted): the signature's input fields."""
    variables = PromptTemplate(template).input_variables
    if example is None:
        return tuple(sorted(variables))
    return tuple(k for k in example.inputs if k in variables)


def to_dspy(prompt: PromptLike, task: TaskLike | None = None) -> Any:
    """``prompt`` as a ``dspy.Predict``: its instruction as the signature's, its demos as the predictor's demos.

    Inputs (in the data's column order) and labels come from ``task`` when given, else from the template's
    variables. DSPy renders with its own adapter, so the Jinja2 template itself does not travel. An In-Context
    Sampling or soft prompt has no DSPy counterpart and is refused.
    """
    if prompt.ics is not None or prompt.soft_prompt is not None:
        raise ConfigError("an In-Context Sampling or soft prompt has no DSPy counterpart.", field="prompt")
    first = task.train[0] if task is not None else (prompt.demos[0] if prompt.demos else None)
    inputs = input_names(prompt.template, first)
    program = dspy_module().Predict(make_signature(prompt.instruction, inputs, task.labels if task else None))
    program.demos = [to_dspy_example(d, inputs) for d in prompt.demos]
    return program
