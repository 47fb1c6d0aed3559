"""Metrics: ``metric(prediction, example) -> float in [0, 1]``.

Every built-in takes the max over an example's acceptable answers. Register your own with
:func:`register_metric`, name one in task.yaml as ``module:function``, or pass the function to ``make_task(metric=fn)``
(:func:`as_metric`). A metric that raises or returns a non-number is an error on that example
(:func:`score_prediction`), never a score.
"""

from __future__ import annotations

import inspect
import math
import numbers
import re
import string
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from promptopt.core._registry import Registry, name_and_options
from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError


class Metric(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(self, prediction: str, example: Example) -> float: ...


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str, *, drop_articles: bool = True) -> str:
    """Lowercase, drop punctuation and English articles, collapse white space (SQuAD-style).

    A text that is nothing but articles keeps them, so the option label "(A)" becomes "a", not "".
    """
    text = " ".join(text.lower().translate(_PUNCT).split())
    return (" ".join(_ARTICLES.sub(" ", text).split()) or text) if drop_articles else text


_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def parse_number(text: str) -> float | None:
    """The last number in ``text`` (commas as thousands separators), or None."""
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def _exact(pred: str, ans: str) -> float:
    return float(normalize(pred) == normalize(ans))


def _contains(pred: str, ans: str) -> float:
    a = normalize(ans)
    return float(bool(a) and re.search(rf"(^|\s){re.escape(a)}($|\s)", normalize(pred)) is not None)


def _f1(pred: str, ans: str) -> float:
    p, a = normalize(pred).split(), normalize(ans).split()
    if not p or not a:
        return float(p == a)
    common = sum((Counter(p) & Counter(a)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(a)
    return 2 * precision * recall / (precision + recall)


def _items(text: str) -> frozenset[str]:
    return frozenset(normalize(t) for t in re.split(r"[,;\n]|\s+and\s+|\s", text) if normalize(t))


def _exact_set(pred: str, ans: str) -> float:
    return float(_items(pred) == _items(ans))


@dataclass(frozen=True)
class AnswerMetric:
    """A metric defined by a pairwise comparison, maxed over the acceptable answers."""

    name: str
    compare: Callable[[str, str], float] = field(repr=False)

    def __call__(self, prediction: str, example: Example) -> float:
        return max(self.compare(prediction, a) for a in example.answers)


@dataclass(frozen=True)
class NumericMetric:
    """1 if the last number in the prediction equals the answer within ``tolerance``."""

    tolerance: float = 1e-6
    name: str = "numeric"

    def __call__(self, prediction: str, example: Example) -> float:
        got = parse_number(prediction)
        if got is None:
            return 0.0
        for ans in example.answers:
            want = parse_number(ans)
            if want is not None and math.isclose(got, want, rel_tol=0.0, abs_tol=self.tolerance):
                return 1.0
        return 0.0


@dataclass(frozen=True)
class RegexMetric:
    """1 if the prediction matches ``pattern`` (which may use ``{answer}``, escaped, for the reference)."""

    pattern: str
    name: str = "regex"

    def __call__(self, prediction: str, example: Example) -> float:
        for ans in example.answers:
            if re.search(self.pattern.replace("{answer}", re.escape(ans)), prediction, flags=re.IGNORECASE):
                return 1.0
        return 0.0


@dataclass(frozen=True)
class LabelAccuracy:
    """Accuracy over a label set: the normalised prediction must equal the label exactly."""

    name: str = "accuracy"

    def __call__(self, prediction: str, example: Example) -> float:
        return max(_exact(prediction, a) for a in example.answers)


METRICS: Registry[Callable[..., Metric]] = Registry("metric", group="promptopt.metrics")
METRICS.add("exact_match", lambda: AnswerMetric("exact_match", _exact))
METRICS.add("accuracy", LabelAccuracy)
METRICS.add("f1", lambda: AnswerMetric("f1", _f1))
METRICS.add("contains", lambda: AnswerMetric("contains", _contains))
METRICS.add("exact_set", lambda: AnswerMetric("exact_set", _exact_set))
METRICS.add("numeric", NumericMetric)
METRICS.add("regex", RegexMetric)


def register_metric(name: str, factory: Callable[..., Metric]) -> None:
    METRICS.add(name, factory)


class MetricError(ValueError):
    """A metric that raised or returned something other than a number: recorded on the example, never a score."""


def checked_score(value: object, name: str) -> float:
    """``value`` as a score: a real number (a bool counts as 0/1) that is not NaN; else :class:`MetricError`."""
    if isinstance(value, numbers.Real) and not math.isnan(float(value)):
        return float(value)
    raise MetricError(f"metric '{name}' returned {value!r} ({type(value).__name__}), not a number")


def score_prediction(metric: Metric, prediction: str, example: Example) -> tuple[float, str | None]:
    """``metric(prediction, example)`` as ``(score, None)``, or ``(0.0, error)`` when the metric raised or returned
    a non-number — the one way the evaluator scores, so a broken metric is an error on that example, not a score."""
    try:
        return checked_score(metric(prediction, example), metric.name), None
    except Exception as exc:  # a user's metric may raise anything; it must not end the evaluation
        detail = (
            str(exc) if isinstance(exc, MetricError) else f"metric '{metric.name}' raised {type(exc).__name__}: {exc}"
        )
        return 0.0, detail


@dataclass(frozen=True)
class FunctionMetric:
    """A user function ``f(prediction, example) -> float`` used as a metric (a bool counts as 0/1)."""

    fn: Callable[[str, Example], float] = field(repr=False)
    name: str = "custom"

    def __call__(self, prediction: str, example: Example) -> float:
        return checked_score(self.fn(prediction, example), self.name)


def _check_callable(fn: object, what: str, *, source: str | None, field: str) -> None:
    """Refuse a non-callable, or a callable that cannot be called as ``fn(prediction, example)``."""
    if not callable(fn):
        raise ConfigError(
            f"{what} is {fn!r} ({type(fn).__name__}), not a function; give a metric name (e.g. 'exact_match'), "
            "a Metric, or a function f(prediction, example) -> float.",
            source=source,
            field=field,
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: let them be tried
        return
    try:
        signature.bind("prediction", "example")
    except TypeError:
        raise ConfigError(
            f"{what} has the signature {signature}; a metric is called as f(prediction, example) -> float, with "
            "two positional arguments.",
            source=source,
            field=field,
        ) from None


def as_metric(metric: str | Mapping[str, Any] | Metric | Callable[..., Any], *, source: str | None = None) -> Metric:
    """A :class:`Metric` from a name or mapping (:func:`make_metric`), a Metric object (anything callable with a
    string ``name``), or a plain function ``f(prediction, example) -> float``, named by its ``__qualname__``."""
    if isinstance(metric, str | Mapping):
        return make_metric(metric, source=source)
    if not callable(metric):
        _check_callable(metric, "the metric", source=source, field="metric")
    name = getattr(metric, "name", None)
    label = name if isinstance(name, str) else getattr(metric, "__qualname__", None) or type(metric).__qualname__
    _check_callable(metric, f"metric '{label}'", source=source, field="metric")
    if isinstance(name, str):
        return cast(Metric, metric)  # callable, with a name: a Metric
    return FunctionMetric(metric, name=label)


def make_metric(spec: str | Mapping[str, Any], *, source: str | None = None) -> Metric:
    """Build a metric from a name, ``module:function``, or ``{name: ..., **kwargs}``."""
    import importlib

    name, kwargs = name_and_options(spec, "metric", source=source)
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(f"cannot import custom metric '{name}': {exc}", source=source, field="metric") from exc
        _check_callable(fn, f"custom metric '{name}'", source=source, field="metric")
        return FunctionMetric(fn, name=name)
    return METRICS.build(name, source=source, field="metric", **kwargs)
