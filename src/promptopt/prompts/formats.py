"""FormatSpread (Sclar et al., ICLR 2024, "Quantifying Language Models' Sensitivity to Spurious Features in
Prompt Design"): score one prompt under many *plausible formats* and report the interval.

A :class:`Format` rewrites a prompt's Jinja2 template, never its instruction or data. It works on *field
lines* — a line that is a field name, a colon and a ``{{ expression }}`` (``Review: {{ sentence }}``) or
nothing (the answer slot, ``Sentiment:``) — and changes

- the separator between a field name and its value (``": "``, ``" - "``, ``":\\n"`` …),
- the casing of field names (as written, UPPER, lower, Title),
- the field names themselves (as written, or generic ``Input``/``Input 1``…/``Output``),
- how consecutive fields of one example are joined (new line, space, ``" | "`` …),
- the enumeration style of options written ``(A) …`` inside the inputs (``A.``, ``a)``, ``[A]`` …), through
  Jinja's ``replace`` filter, so an exported template still renders with plain Jinja2. Only offered when
  the data has such options and the labels are not themselves option markers.

Other lines (the instruction, ``{% for %}`` loops) are left alone. :func:`promptopt.evaluation.spread.format_spread`
scores a prompt under ``n`` sampled formats (the first is the prompt as written) with the shared evaluator,
cache and budget.
"""

from __future__ import annotations

import random
import re
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal

from promptopt.core.candidate import Prompt
from promptopt.core.exceptions import ConfigError
from promptopt.core.template import PromptTemplate

if TYPE_CHECKING:
    from promptopt.core.task import Task

Casing = Literal["original", "upper", "lower", "title"]
Robust = Literal["none", "mean", "worst"]
"""The ``robust`` objective of optimizers over per-format scores (:func:`robust_score`)."""
SEPARATORS = (": ", " : ", ":: ", " - ", " = ", ":\n", " -> ", ":  ")
CASINGS: tuple[Casing, ...] = ("original", "upper", "lower", "title")
FIELD_JOINS = ("\n", " ", " | ", "; ", "\n\n")
FIELD_NAMES = ("original", "generic")
ENUMERATIONS = ("A.", "A)", "a)", "[A]", "1.", "a.")
_LETTERS = "ABCDEFGH"

_FIELD_LINE = re.compile(
    r"^(?P<name>[A-Za-z][A-Za-z0-9 _'/()]{0,40}?)[ \t]*(?:::|:|->|-|=)[ \t]*(?P<value>\{\{.*\}\})?[ \t]*$"
)
"""A field line in any of the separators below (``:\n`` puts the value on the next line: merged when parsing)."""
_EXPR = re.compile(r"^\{\{\s*(?P<var>[A-Za-z_][\w.]*)\s*\}\}$")
_OPTION = re.compile(r"\([A-H]\) ")


@dataclass(frozen=True, kw_only=True)
class Format:
    """One way of writing a prompt's fields; ``Format()`` is the template as written."""

    separator: str = ": "
    casing: Casing = "original"
    field_join: str = "\n"
    field_names: Literal["original", "generic"] = "original"
    enumeration: str | None = None
    """Style for ``(A) `` option markers in the inputs (``None``: as in the data)."""

    def describe(self) -> str:
        parts = [f"sep={self.separator!r}", f"join={self.field_join!r}"]
        if self.casing != "original":
            parts.append(self.casing)
        if self.field_names != "original":
            parts.append("generic names")
        if self.enumeration:
            parts.append(f"options {self.enumeration}")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}

    def apply(self, template: str) -> str:
        """``template`` rewritten in this format (same variables, same instruction and loops)."""
        items = _parse(template)
        fields = [(n, v) for line, n, v in items if line is None]
        if not fields:
            raise ConfigError(
                "the template has no field lines ('Name: {{ value }}' on a line of its own), so its format cannot "
                "be varied. Put each field on its own line.",
                field="template",
            )
        names = self._names(fields)
        out: list[str] = []
        prev_field = False
        for line, field_name, value in items:
            if line is not None:
                out.append(("\n" if out else "") + line)
                prev_field = False
                continue
            name = names[field_name]
            text = f"{name}{self.separator}{self._value(value)}" if value else f"{name}{self.separator.rstrip(' ')}"
            out.append(((self.field_join if prev_field else "\n") if out else "") + text)
            prev_field = True
        result = "".join(out)
        before, after = PromptTemplate(template).variables, PromptTemplate(result).variables
        if before != after:  # pragma: no cover - the rewrite never adds or drops expressions
            raise ConfigError(f"format {self.describe()} changed the template's variables.", field="format")
        return result

    def _names(self, fields: Sequence[tuple[str, str | None]]) -> dict[str, str]:
        originals = list(dict.fromkeys(n for n, _ in fields))
        answer = {n for n, v in fields if not v or _is_answer(v)}
        inputs = [n for n in originals if n not in answer]
        mapping = {}
        for n in originals:
            if self.field_names == "generic":
                new = "Output" if n in answer else ("Input" if len(inputs) == 1 else f"Input {inputs.index(n) + 1}")
            else:
                new = n
            mapping[n] = _case(new, self.casing)
        return mapping

    def _value(self, value: str) -> str:
        m = _EXPR.match(value)
        if self.enumeration is None or m is None or _is_answer(value):
            return value
        filters = "".join(f' | replace("({c}) ", "{_marker(self.enumeration, i)} ")' for i, c in enumerate(_LETTERS))
        return "{{ " + m.group("var") + filters + " }}"


def _parse(template: str) -> list[tuple[str | None, str, str | None]]:
    """The template as (other line, "", None) or (None, field name, value expression or None) items."""
    lines = template.split("\n")
    items: list[tuple[str | None, str, str | None]] = []
    i = 0
    while i < len(lines):
        m = _FIELD_LINE.match(lines[i])
        if m is None:
            items.append((lines[i], "", None))
        elif not m.group("value") and i + 1 < len(lines) and _EXPR.match(lines[i + 1].strip()):
            items.append((None, m.group("name"), lines[i + 1].strip()))  # 'Name:' + value on the next line
            i += 1
        else:
            items.append((None, m.group("name"), m.group("value")))
        i += 1
    return items


def _is_answer(value: str) -> bool:
    m = _EXPR.match(value)
    return m is not None and (m.group("var") == "answer" or m.group("var").endswith(".answer"))


def _case(name: str, casing: Casing) -> str:
    return {"original": name, "upper": name.upper(), "lower": name.lower(), "title": name.title()}[casing]


def _marker(style: str, i: int) -> str:
    """The ``i``-th option marker in ``style`` (written for the first option: ``A.``, ``a)``, ``1.`` …)."""
    first = next(ch for ch in style if ch.isalnum())
    sym = str(i + 1) if first == "1" else (_LETTERS[i].lower() if first == "a" else _LETTERS[i])
    return style.replace(first, sym, 1)


def has_options(task: Task) -> bool:
    """Whether enumeration styles apply: inputs list ``(A) …`` options and labels are not such markers."""
    labels = task.labels or ()
    if any(re.fullmatch(r"\(?[A-Ha-h][).]?", lab) for lab in labels):
        return False
    return any(_OPTION.search(str(v)) for ex in task.train for v in ex.inputs.values())


def sample_formats(n: int, *, seed: int = 0, enumeration: bool = False) -> list[Format]:
    """``n`` distinct formats; the first is the template as written, the rest are drawn with ``seed``."""
    if n < 1:
        raise ConfigError(f"must be >= 1, got {n}.", field="n_formats")
    rng = random.Random(seed)
    out = [Format()]
    seen = {Format()}
    enums: tuple[str | None, ...] = (None, *ENUMERATIONS) if enumeration else (None,)
    for _ in range(1000 * n):
        if len(out) == n:
            break
        f = Format(
            separator=rng.choice(SEPARATORS),
            casing=rng.choice(CASINGS),
            field_join=rng.choice(FIELD_JOINS),
            field_names=rng.choice(FIELD_NAMES),  # type: ignore[arg-type]
            enumeration=rng.choice(enums),
        )
        if f not in seen:
            seen.add(f)
            out.append(f)
    return out


def apply_format(prompt: Prompt, fmt: Format) -> Prompt:
    """``prompt`` written in ``fmt`` (a new candidate; the original when ``fmt`` is ``Format()``)."""
    if fmt == Format():
        return prompt
    base = prompt.meta.get("unformatted_template", prompt.template)  # re-format from the original fields
    return replace(
        prompt,
        template=fmt.apply(base),
        parents=(prompt.id,),
        origin="format",
        meta={**prompt.meta, "format": fmt.describe(), "unformatted_template": base},
    )


def robust_score(means: Sequence[float], objective: Robust) -> float:
    """The ``robust`` objective over per-format scores: their ``mean``, the ``worst`` (min), or for ``none``
    the first (the prompt as written)."""
    if objective == "none":
        return means[0]
    if objective == "mean":
        return statistics.fmean(means)
    if objective == "worst":
        return min(means)
    raise ConfigError(f"unknown robust objective {objective!r}; use mean or worst.", field="robust")


def format_variants(prompt: Prompt, task: Task, n: int, *, seed: int = 0) -> list[Prompt]:
    """``prompt`` in ``n`` formats (the first as written), for the ``robust`` objective of optimizers."""
    return [apply_format(prompt, f) for f in sample_formats(n, seed=seed, enumeration=has_options(task))]
