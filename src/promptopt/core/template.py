"""Prompt templates: sandboxed Jinja2 with StrictUndefined.

A template renders the *user message* for one example. It sees the example's input fields, the
``instruction`` being optimized and ``demos`` (a list of dicts with the demo's input fields plus ``answer``).
Input text is data, never template code: it is passed as variables and never parsed by Jinja.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any

import jinja2
from jinja2 import meta
from jinja2.sandbox import SandboxedEnvironment

from promptopt.core.exceptions import TemplateError

RESERVED = frozenset({"instruction", "demos"})

_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@lru_cache(maxsize=512)
def _compiled(source: str) -> jinja2.Template:
    """Compile once per source: compiling costs ~100x a render, and a run renders one template per example."""
    return _ENV.from_string(source)


def render_string(source: str, variables: Mapping[str, Any], *, name: str = "<template>") -> str:
    """Render a Jinja2 source string in the sandbox (StrictUndefined)."""
    try:
        return _compiled(source).render(**variables)
    except jinja2.UndefinedError as exc:
        raise TemplateError(
            f"{exc.message}. Available variables: {', '.join(sorted(variables)) or '(none)'}. "
            "Rename the template variable or map the data field in task.yaml 'inputs:'.",
            source=name,
        ) from exc
    except jinja2.TemplateError as exc:
        raise TemplateError(f"cannot render: {exc}", source=name) from exc


@dataclass(frozen=True)
class PromptTemplate:
    """A Jinja2 template for the user message of one example."""

    source: str
    name: str = field(default="<template>", compare=False)

    def __post_init__(self) -> None:
        try:
            _ENV.parse(self.source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"syntax error on line {exc.lineno}: {exc.message}", source=self.name) from exc

    @cached_property
    def variables(self) -> frozenset[str]:
        """Top-level variables the template reads (inputs, plus ``instruction``/``demos`` if used)."""
        return frozenset(meta.find_undeclared_variables(_ENV.parse(self.source)))

    @property
    def input_variables(self) -> frozenset[str]:
        return self.variables - RESERVED

    def check_inputs(self, available: Iterable[str]) -> None:
        """Raise :class:`TemplateError` if the template reads a variable the data does not provide."""
        available = set(available)
        missing = sorted(self.input_variables - available)
        if missing:
            raise TemplateError(
                f"template variable(s) {', '.join(repr(m) for m in missing)} not provided by the data "
                f"(available: {', '.join(sorted(available)) or '(none)'}). "
                "Rename the variable in the template or map the field in task.yaml 'inputs:'.",
                source=self.name,
            )

    def render(self, *, instruction: str, inputs: Mapping[str, Any], demos: Iterable[Mapping[str, Any]] = ()) -> str:
        variables = {**inputs, "instruction": instruction, "demos": list(demos)}
        return render_string(self.source, variables, name=self.name).strip()
