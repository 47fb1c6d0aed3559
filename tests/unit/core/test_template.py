"""Templates: sandboxed Jinja2 with StrictUndefined; input text is data, never template code."""

from __future__ import annotations

import pytest

from promptopt import ConfigError, PromptTemplate, TemplateError
from promptopt.core.template import render_string


def test_renders_instruction_inputs_and_demos():
    t = PromptTemplate("{{ instruction }}\n{% for d in demos %}Q: {{ d.q }} A: {{ d.answer }}\n{% endfor %}Q: {{ q }}")
    out = t.render(instruction="Answer.", inputs={"q": "2+2"}, demos=[{"q": "1+1", "answer": "2"}])
    assert out == "Answer.\nQ: 1+1 A: 2\nQ: 2+2"


def test_variables_and_input_variables():
    t = PromptTemplate("{{ instruction }} {% for d in demos %}{{ d.x }}{% endfor %} {{ question }} {{ context }}")
    assert t.variables == {"instruction", "demos", "question", "context"}
    assert t.input_variables == {"question", "context"}


def test_missing_variable_names_it_and_the_available_ones():
    t = PromptTemplate("{{ instruction }} {{ question }}", name="qa.jinja")
    with pytest.raises(TemplateError) as info:
        t.render(instruction="x", inputs={"text": "hello"})
    msg = str(info.value)
    assert "'question' is undefined" in msg
    assert "Available variables: demos, instruction, text" in msg
    assert msg.startswith("qa.jinja: ")
    assert isinstance(info.value, ConfigError)


def test_check_inputs_reports_missing_columns():
    t = PromptTemplate("{{ question }} {{ context }}", name="t.jinja")
    t.check_inputs(["question", "context", "extra"])  # no error
    with pytest.raises(TemplateError, match=r"'context' not provided by the data \(available: question\)"):
        t.check_inputs(["question"])


@pytest.mark.parametrize("source", ["{{ x ", "{% for a in b %}no end", "{{ x | }}"])
def test_syntax_error_raises_template_error_with_line(source):
    with pytest.raises(TemplateError, match=r"syntax error on line 1"):
        PromptTemplate(source, name="bad.jinja")


def test_syntax_error_reports_the_right_line():
    with pytest.raises(TemplateError, match=r"bad\.jinja: syntax error on line 3"):
        PromptTemplate("line one\nline two\n{{ oops }", name="bad.jinja")


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ x.__init__.__globals__ }}",
    ],
)
def test_sandbox_blocks_dunder_attribute_access(source):
    with pytest.raises(TemplateError):
        render_string(source, {"x": object()})


def test_input_text_is_data_not_template_code():
    t = PromptTemplate("{{ instruction }}\nText: {{ text }}")
    hostile = "{{ secret }} {% for i in range(3) %}{{ i }}{% endfor %} {{ ''.__class__ }}"
    out = t.render(instruction="Summarise.", inputs={"text": hostile, "secret": "LEAK"})
    assert out == f"Summarise.\nText: {hostile}"
    assert "LEAK" not in out


def test_instruction_text_is_data_too():
    t = PromptTemplate("{{ instruction }}: {{ x }}")
    assert t.render(instruction="Use {{ x }} here", inputs={"x": "1"}) == "Use {{ x }} here: 1"


def test_render_strips_surrounding_whitespace_and_no_html_escaping():
    t = PromptTemplate("\n  {{ x }}  \n")
    assert t.render(instruction="", inputs={"x": "<b>&'\"</b>"}) == "<b>&'\"</b>"


def test_equality_ignores_name():
    assert PromptTemplate("{{ x }}", name="a") == PromptTemplate("{{ x }}", name="b")
