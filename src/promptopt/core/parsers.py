"""Output parsers: turn a model's raw text into the answer the metric sees.

A parser returns ``None`` when the output holds no answer at all; the evaluator records that as a parse
error, reported apart from wrong answers.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from promptopt.core._registry import Registry, name_and_options
from promptopt.core.exceptions import ConfigError
from promptopt.core.metrics import _ARTICLES, _NUMBER, normalize


class Parser(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(self, text: str) -> str | None: ...


@dataclass(frozen=True)
class Identity:
    name: str = "identity"

    def __call__(self, text: str) -> str | None:
        return text.strip() or None


@dataclass(frozen=True)
class FirstLine:
    """The first non-empty line, stripped of quotes and a trailing period."""

    name: str = "first_line"

    def __call__(self, text: str) -> str | None:
        for line in text.splitlines():
            line = line.strip().strip("\"'`").strip()
            if line:
                return line.rstrip(".").strip() or None
        return None


@dataclass(frozen=True)
class LastNumber:
    name: str = "last_number"

    def __call__(self, text: str) -> str | None:
        found = _NUMBER.findall(text)
        return found[-1].replace(",", "") if found else None


@dataclass(frozen=True)
class RegexParser:
    """The first match of ``pattern`` (group 1 if the pattern has a group)."""

    pattern: str
    name: str = "regex"

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ConfigError(f"invalid regex {self.pattern!r}: {exc}", field="parser.pattern") from exc

    def __call__(self, text: str) -> str | None:
        m = re.search(self.pattern, text, flags=re.IGNORECASE | re.DOTALL)
        if not m:
            return None
        return (m.group(1) if m.re.groups else m.group(0)).strip()


@dataclass(frozen=True)
class LabelSet:
    """The label the output names: the earliest label occurrence wins; None if no label appears."""

    labels: Sequence[str]
    name: str = "label_set"

    def __call__(self, text: str) -> str | None:
        # the label as written ("(A)", "positive") wins; normalised matching is the fallback
        literal = self._earliest(text.lower(), {label: label.lower() for label in self.labels}, r"(?<!\w)", r"(?!\w)")
        if literal is not None:
            return literal
        # labels like "(A)" normalize to an article; then articles must stay in the text to be found
        drop = not any(_ARTICLES.fullmatch(normalize(label)) for label in self.labels)
        forms = {label: normalize(label, drop_articles=drop) for label in self.labels}
        return self._earliest(normalize(text, drop_articles=drop), forms, r"(^|\s)", r"($|\s)")

    @staticmethod
    def _earliest(text: str, forms: Mapping[str, str], before: str, after: str) -> str | None:
        """The label whose form occurs first in ``text`` (longer forms win ties)."""
        best: tuple[int, int, str] | None = None
        for label, form in forms.items():
            m = re.search(before + re.escape(form) + after, text) if form else None
            if m and (best is None or (m.start(), -len(form)) < best[:2]):
                best = (m.start(), -len(form), label)
        return best[2] if best else None


PARSERS: Registry[Callable[..., Parser]] = Registry("parser", group="promptopt.parsers")
PARSERS.add("identity", Identity)
PARSERS.add("first_line", FirstLine)
PARSERS.add("last_number", LastNumber)
PARSERS.add("regex", RegexParser)
PARSERS.add("label_set", LabelSet)


def make_parser(
    spec: str | Mapping[str, Any] | None, *, labels: Sequence[str] | None = None, source: str | None = None
) -> Parser:
    """Build a parser from a name or ``{name: ..., **kwargs}``; ``label_set`` gets the task's labels."""
    if spec is None:
        spec = "label_set" if labels else "first_line"
    name, kwargs = name_and_options(spec, "parser", source=source)
    if name == "label_set":
        if not labels:
            raise ConfigError("the label_set parser needs the task's 'labels'", source=source, field="parser")
        kwargs.setdefault("labels", tuple(labels))
    return PARSERS.build(name, source=source, field="parser", **kwargs)
