"""Output parsers: what the metric sees, and None (a parse error) when the output holds no answer."""

from __future__ import annotations

import pytest

from promptopt import ConfigError, UnknownComponentError
from promptopt.core.parsers import FirstLine, LabelSet, LastNumber, RegexParser, make_parser


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("positive", "positive"),
        ("Negative.", "negative"),
        ("The review is negative, not positive.", "negative"),
        ("positive... or maybe negative", "positive"),
        ("I'd say POSITIVE!", "positive"),
        ("neutral", None),
        ("", None),
        ("positively glowing", None),  # whole words only
    ],
)
def test_label_set_picks_the_earliest_label(text, expected):
    assert LabelSet(("positive", "negative"))(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(B)", "(B)"),
        ("The answer is (C).", "(C)"),
        ("a", "(A)"),
        ("none", None),
        ("This is a hard one: (D)", "(D)"),
    ],
)
def test_label_set_with_option_letters(text, expected):
    assert LabelSet(("(A)", "(B)", "(C)", "(D)"))(text) == expected


def test_label_set_returns_the_label_as_spelled_in_the_label_set():
    assert LabelSet(("Positive", "Negative"))("negative") == "Negative"


def test_label_set_prefers_the_longer_label_at_the_same_position():
    assert LabelSet(("no", "no idea"))("no idea, sorry") == "no idea"
    assert LabelSet(("no idea", "no"))("no, I know") == "no"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Paris\nbecause it is the capital", "Paris"),
        ('\n\n  "Paris."  \nmore', "Paris"),
        ("`x`", "x"),
        ("\n \n", None),
        (".", None),
    ],
)
def test_first_line(text, expected):
    assert FirstLine()(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3 apples and 4 pears make 7", "7"),
        ("The total is 1,234.5.", "1234.5"),
        ("-12", "-12"),
        ("no digits", None),
    ],
)
def test_last_number(text, expected):
    assert LastNumber()(text) == expected


def test_regex_parser_group_and_whole_match():
    assert RegexParser(r"answer:\s*(\w+)")("Thinking... ANSWER: yes\nbye") == "yes"
    assert RegexParser(r"\d+")("abc 42 def") == "42"
    assert RegexParser(r"answer:\s*(\w+)")("no answer here") is None


def test_regex_parser_rejects_invalid_pattern():
    with pytest.raises(ConfigError, match="invalid regex"):
        RegexParser("(unclosed")


def test_make_parser_defaults():
    assert make_parser(None, labels=["a1", "b1"]).name == "label_set"
    assert make_parser(None).name == "first_line"
    assert make_parser({"name": "regex", "pattern": "(x)"})("x") == "x"


def test_make_parser_errors():
    with pytest.raises(ConfigError, match="label_set parser needs the task's 'labels'"):
        make_parser("label_set")
    with pytest.raises(UnknownComponentError, match="Did you mean 'last_number'"):
        make_parser("last_numbr")
    with pytest.raises(ConfigError, match="bad arguments for parser 'regex'"):
        make_parser({"name": "regex"})
    with pytest.raises(ConfigError, match="needs 'name'"):
        make_parser({"pattern": "x"})
