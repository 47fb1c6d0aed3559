"""Metrics: normalisation, every built-in, max over acceptable answers, custom and bad specs."""

from __future__ import annotations

import pytest

from promptopt import ConfigError, Example, UnknownComponentError
from promptopt.core.metrics import METRICS, make_metric, normalize, parse_number, register_metric


def ex(target) -> Example:
    return Example(id="e", inputs={"q": "?"}, target=target)


def score(metric, prediction: str, target) -> float:
    return make_metric(metric)(prediction, ex(target))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The  Cat, sat!", "cat sat"),
        ("  An apple a day.\n", "apple day"),
        ("HELLO-world", "helloworld"),
        ("", ""),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_builtin_names_are_registered():
    assert {"exact_match", "accuracy", "f1", "contains", "exact_set", "numeric", "regex"} <= set(METRICS.names())


def test_option_letters_survive_normalisation():
    # "(A)" is an option label, not an article: it must not normalise to the empty string
    assert normalize("(A)") == "a"
    assert score("exact_match", "(A)", "A") == 1.0
    assert score("exact_match", "(B)", "(A)") == 0.0
    assert score("exact_match", "an", "(A)") == 0.0
    assert score("contains", "The answer is (A)", "(A)") == 0.0  # articles are still dropped from longer text


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("Paris", "paris", 1.0),
        ("The Paris.", "Paris", 1.0),
        ("Paris, France", "Paris", 0.0),
        ("", "Paris", 0.0),
    ],
)
def test_exact_match(prediction, target, expected):
    assert score("exact_match", prediction, target) == expected


def test_accuracy_is_normalised_label_equality():
    assert score("accuracy", "Positive.", "positive") == 1.0
    assert score("accuracy", "positive review", "positive") == 0.0


def test_f1_token_overlap():
    # prediction {cat, sat} vs answer {cat, sat, down}: precision 1, recall 2/3
    assert score("f1", "the cat sat", "cat sat down") == pytest.approx(0.8)
    assert score("f1", "dog", "cat") == 0.0
    assert score("f1", "Cat sat down", "cat sat down") == 1.0


def test_contains_matches_whole_words_only():
    assert score("contains", "I think the answer is Paris.", "paris") == 1.0
    assert score("contains", "Parisian food", "paris") == 0.0
    assert score("contains", "new york city", "New York") == 1.0


def test_exact_set_ignores_order_and_separators():
    assert score("exact_set", "red, green and blue", "blue; green; red") == 1.0
    assert score("exact_set", "red, green", "red, green, blue") == 0.0


@pytest.mark.parametrize(
    ("prediction", "target", "expected"),
    [
        ("18", "18", 1.0),
        ("18.0", "18", 1.0),
        ("The answer is 18.", "18", 1.0),
        ("1,000", "1000", 1.0),
        ("total: 1,000 apples", "1,000", 1.0),
        ("2 + 3 = 5", "5", 1.0),  # the last number counts
        ("5 then 2", "5", 0.0),
        ("-3", "3", 0.0),
        ("no number", "4", 0.0),
        ("0.5", ".5", 1.0),
    ],
)
def test_numeric(prediction, target, expected):
    assert score("numeric", prediction, target) == expected


def test_numeric_tolerance():
    assert score({"name": "numeric", "tolerance": 0.1}, "3.14", "3.1") == 1.0
    assert score("numeric", "3.14", "3.1") == 0.0


def test_parse_number():
    assert parse_number("It costs $1,234.50 in total") == 1234.5
    assert parse_number("nothing") is None


def test_regex_metric_with_answer_placeholder():
    m = {"name": "regex", "pattern": r"answer is {answer}\b"}
    assert score(m, "So the answer is 4.2", "4.2") == 1.0
    assert score(m, "So the answer is 4x2", "4.2") == 0.0  # the reference is escaped, '.' is literal
    assert score(m, "ANSWER IS 4.2", "4.2") == 1.0  # case-insensitive


@pytest.mark.parametrize("metric", ["exact_match", "accuracy", "f1", "contains", "exact_set", "numeric"])
def test_max_over_acceptable_answers(metric):
    target = ["wrong one", "42"] if metric != "numeric" else ["7", "42"]
    assert score(metric, "42", target) == 1.0
    assert ex(target).target == tuple(target)  # lists become tuples


def test_custom_metric_from_module_function(tmp_path, monkeypatch):
    (tmp_path / "my_metrics.py").write_text("def longer(prediction, example):\n    return len(prediction) > 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = make_metric("my_metrics:longer")
    assert m.name == "my_metrics:longer"
    assert m("abcd", ex("x")) == 1.0
    assert m("ab", ex("x")) == 0.0


@pytest.mark.parametrize("spec", ["no_such_module_xyz:f", "promptopt.core.metrics:no_such_function"])
def test_bad_custom_metric_raises_config_error(spec):
    with pytest.raises(ConfigError, match="cannot import custom metric"):
        make_metric(spec, source="task.yaml")


def test_unknown_metric_suggests_the_closest():
    with pytest.raises(UnknownComponentError, match=r"Unknown metric 'exact_mach'\. Did you mean 'exact_match'\?"):
        make_metric("exact_mach")


def test_bad_metric_arguments_and_mapping_without_name():
    with pytest.raises(ConfigError, match="bad arguments for metric 'regex'"):
        make_metric({"name": "regex"})  # no pattern
    with pytest.raises(ConfigError, match="needs 'name'"):
        make_metric({"pattern": "x"})


def test_register_metric():
    class Always:
        name = "always_one_test"

        def __call__(self, prediction, example):
            return 1.0

    register_metric("always_one_test", Always)
    assert score("always_one_test", "anything", "x") == 1.0
