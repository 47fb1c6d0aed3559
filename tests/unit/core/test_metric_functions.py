"""Plain functions as metrics: ``make_task(metric=fn)`` and task.yaml's ``module:function`` wrap them into a Metric;
a non-callable or a function of the wrong arity is a ConfigError naming the field."""

from __future__ import annotations

import pytest

from promptopt import ConfigError, Example, make_task
from promptopt.core.metrics import FunctionMetric, MetricError, as_metric, checked_score, make_metric


def examples(prefix: str) -> list[Example]:
    return [Example(id=f"{prefix}-{i}", inputs={"word": w}, target=w) for i, w in enumerate(["cat", "dog"])]


def task_with(metric: object):
    return make_task(
        name="words",
        template="{{ instruction }}\n{{ word }}",
        instruction="Repeat the word.",
        train=examples("train"),
        dev=examples("dev"),
        test=examples("test"),
        metric=metric,  # type: ignore[arg-type]
    )


def starts_like(prediction: str, example: Example) -> float:
    return float(prediction[:1] == example.answer[:1])


def test_a_plain_function_becomes_a_named_metric():
    task = task_with(starts_like)
    assert isinstance(task.metric, FunctionMetric)
    assert task.metric.name == "starts_like"
    ex = task.dev[0]
    assert task.metric("cow", ex) == 1.0 and task.metric("dog", ex) == 0.0
    assert task.summary()["metric"] == "starts_like"


def test_lambdas_methods_and_callables_are_named_by_qualname():
    assert (
        task_with(lambda p, e: 1.0).metric.name
        == "test_lambdas_methods_and_callables_are_named_by_qualname.<locals>.<lambda>"
    )

    class Scorer:
        def score(self, prediction: str, example: Example) -> float:
            return 1.0

        def __call__(self, prediction: str, example: Example) -> float:
            return 0.5

    assert task_with(Scorer().score).metric.name.endswith("Scorer.score")
    assert task_with(Scorer()).metric.name.endswith("Scorer")  # an instance: its class's qualname
    assert task_with(lambda p, e, extra=1: 1.0).metric.name.endswith("<lambda>")  # defaults are fine


def test_a_metric_object_with_a_name_is_kept_as_it_is():
    metric = make_metric("f1")
    assert task_with(metric).metric is metric


@pytest.mark.parametrize("bad", [42, "", None], ids=["int", "empty-name", "none"])
def test_a_non_callable_metric_is_a_config_error_naming_the_field(bad):
    with pytest.raises(ConfigError) as info:
        task_with(bad)
    assert info.value.field == "metric"


def test_a_non_callable_object_names_what_was_given():
    with pytest.raises(ConfigError, match=r"field 'metric': the metric is 42 \(int\), not a function"):
        task_with(42)


@pytest.mark.parametrize(
    "fn",
    [lambda prediction: 1.0, lambda prediction, example, reference: 1.0, lambda: 1.0],
    ids=["one-arg", "three-args", "no-args"],
)
def test_a_function_of_the_wrong_arity_is_a_config_error_at_make_task(fn):
    with pytest.raises(ConfigError, match=r"field 'metric': .*f\(prediction, example\)") as info:
        task_with(fn)
    assert info.value.field == "metric"


def test_a_module_function_metric_is_checked_too(tmp_path, monkeypatch):
    (tmp_path / "my_arity_metrics.py").write_text(
        "THRESHOLD = 3\n\ndef one(prediction):\n    return 1.0\n\ndef good(prediction, example):\n    return 1\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="custom metric 'my_arity_metrics:one' has the signature") as info:
        make_metric("my_arity_metrics:one", source="task.yaml")
    assert (info.value.source, info.value.field) == ("task.yaml", "metric")
    with pytest.raises(ConfigError, match="not a function"):
        make_metric("my_arity_metrics:THRESHOLD", source="task.yaml")
    assert make_metric("my_arity_metrics:good")("x", examples("d")[0]) == 1.0


def test_as_metric_passes_names_and_mappings_to_make_metric():
    assert as_metric("exact_match").name == "exact_match"
    assert as_metric({"name": "regex", "pattern": "x"}).name == "regex"


@pytest.mark.parametrize("value", ["0.5", None, float("nan"), [1.0]])
def test_checked_score_refuses_what_is_not_a_number(value):
    with pytest.raises(MetricError, match=r"metric 'm' returned .* not a number"):
        checked_score(value, "m")


def test_checked_score_takes_bools_and_ints():
    assert checked_score(True, "m") == 1.0 and checked_score(0, "m") == 0.0 and checked_score(0.25, "m") == 0.25
