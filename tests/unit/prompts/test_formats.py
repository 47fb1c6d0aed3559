"""FormatSpread: format rewrites of templates, format sampling, the spread interval and the CLI command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from promptopt import Example, Prompt, make_task
from promptopt.core.exceptions import ConfigError
from promptopt.core.template import PromptTemplate
from promptopt.evaluation.evaluator import Evaluator
from promptopt.evaluation.spread import format_spread
from promptopt.models.budget import BudgetTracker
from promptopt.models.client import ModelClient
from promptopt.models.fake import FakeModel, last_user
from promptopt.prompts.formats import Format, apply_format, format_variants, has_options, robust_score, sample_formats

SST2 = (
    "{{ instruction }}\n{% for d in demos %}\nReview: {{ d.sentence }}\nSentiment: {{ d.answer }}\n{% endfor %}"
    "\nReview: {{ sentence }}\nSentiment:"
)
NLI = "{{ instruction }}\n\nPremise: {{ premise }}\nHypothesis: {{ hypothesis }}\nRelation:"
DEMOS = (Example(id="d1", inputs={"sentence": "great"}, target="positive"),)


def render(template: str, **inputs: str) -> str:
    p = Prompt(instruction="Classify.", template=template, demos=DEMOS)
    return p.render_user(inputs)


def test_the_default_format_is_the_template_as_written():
    assert Format().apply(SST2) == SST2
    p = Prompt(instruction="x", template=SST2)
    assert apply_format(p, Format()) is p


def test_separator_casing_and_field_join():
    f = Format(separator=" - ", casing="upper", field_join=" | ")
    out = render(f.apply(SST2), sentence="dull")
    assert out == "Classify.\n\nREVIEW - great | SENTIMENT - positive\n\nREVIEW - dull | SENTIMENT -"
    assert PromptTemplate(f.apply(SST2)).variables == PromptTemplate(SST2).variables


def test_newline_separator_and_generic_field_names():
    f = Format(separator=":\n", field_names="generic", casing="lower")
    out = Prompt(instruction="Decide.", template=f.apply(NLI)).render_user({"premise": "A", "hypothesis": "B"})
    assert out == "Decide.\n\ninput 1:\nA\ninput 2:\nB\noutput:"


def test_enumeration_restyles_options_in_the_inputs_but_not_the_answers():
    template = "{% for d in demos %}\nQ: {{ d.q }}\nA: {{ d.answer }}\n{% endfor %}\nQ: {{ q }}\nA:"
    f = Format(enumeration="a)")
    demo = Example(id="d", inputs={"q": "Pick:\n(A) red\n(B) blue"}, target="(A) red")
    p = Prompt(instruction="", template=f.apply(template), demos=(demo,))
    out = p.render_user({"q": "Pick:\n(A) one\n(B) two\n(C) three"})
    assert "a) red\nb) blue\nA: (A) red" in out
    assert out.endswith("a) one\nb) two\nc) three\nA:")
    assert "1. one" in Prompt(instruction="", template=Format(enumeration="1.").apply(template)).render_user(
        {"q": "(A) one"}
    )


def test_sampled_formats_are_distinct_seeded_and_start_with_the_original():
    fs = sample_formats(12, seed=3)
    assert fs[0] == Format() and len(set(fs)) == 12
    assert fs == sample_formats(12, seed=3) and fs != sample_formats(12, seed=4)
    assert all(f.enumeration is None for f in fs)
    assert any(f.enumeration for f in sample_formats(12, seed=3, enumeration=True))


def task_with(inputs: list[str], labels: list[str]):
    exs = [Example(id=f"e{i}", inputs={"sentence": t}, target=labels[0]) for i, t in enumerate(inputs)]
    return make_task(name="fmt", template=SST2, instruction="Classify.", train=exs, dev=exs, test=exs, labels=labels)


def test_options_are_offered_only_when_the_data_has_them_and_labels_are_not_markers():
    assert not has_options(task_with(["plain text"], ["positive", "negative"]))
    assert has_options(task_with(["Pick:\n(A) x\n(B) y"], ["yes", "no"]))
    assert not has_options(task_with(["Pick:\n(A) x\n(B) y"], ["(A)", "(B)"]))


def test_format_spread_reports_the_interval_over_formats():
    # right only when the prompt uses ': ' after a field name: the original format scores 1, others mostly 0
    model = FakeModel(fn=lambda r: "positive" if "Review: " in last_user(r.messages) else "negative")
    task = task_with(["good", "fine", "nice", "great"], ["positive", "negative"])
    ev = Evaluator(task, ModelClient(model, cache=None, budget=BudgetTracker()))
    res = format_spread(ev, task.seed_prompt(), n_formats=10, seed=0, split="test")
    expected = [1.0 if f.separator == ": " and f.field_names == "original" and f.casing in ("original", "title")
                else 0.0 for f in res.formats]  # fmt: skip
    assert res.means == expected and res.means[0] == 1.0
    assert (res.min, res.max) == (0.0, 1.0)
    s = res.summary()
    assert s["n_formats"] == 10 and len(s["formats"]) == 10 and s["original"] == 1.0
    assert "min 0.000" in res.format()


def test_robust_score_and_variants():
    assert robust_score([0.5, 0.7, 0.3], "mean") == pytest.approx(0.5)
    assert robust_score([0.5, 0.7, 0.3], "worst") == 0.3
    assert robust_score([0.5, 0.7, 0.3], "none") == 0.5
    task = task_with(["a"], ["positive", "negative"])
    vs = format_variants(task.seed_prompt(), task, 4, seed=1)
    assert vs[0] == task.seed_prompt() and len({v.id for v in vs}) == 4


def test_cli_spread_prints_the_interval(tmp_path):
    from promptopt.cli.app import app
    from promptopt.testing import write_toy_task

    path = write_toy_task(tmp_path / "toy")
    cache = str(tmp_path / "c.sqlite")
    args = ["spread", "--task", str(path), "--model", "fake:echo", "--formats", "3", "--limit", "4", "--cache", cache]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "over 3 formats" in result.output and "as written" in result.output
    result = CliRunner().invoke(app, [*args, "--json"])
    assert json.loads(result.output)["n_formats"] == 3


def test_formatted_templates_parse_again_and_reformat_from_the_original():
    for sep in (" -> ", " = ", ":\n", " - ", ":: "):
        once = Format(separator=sep, field_names="generic").apply(SST2)
        again = Format(separator=": ").apply(once)
        assert render(again, sentence="x").endswith("Input: great\nOutput: positive\n\nInput: x\nOutput:"), sep
    p = apply_format(Prompt(instruction="i", template=SST2), Format(field_join=" | "))  # one line: unparsable
    q = apply_format(p, Format(casing="upper"))  # so the original fields are kept in meta and re-formatted
    assert q.template == Format(casing="upper").apply(SST2)


def test_a_template_without_field_lines_cannot_be_reformatted():
    with pytest.raises(ConfigError, match="field lines"):
        Format(casing="upper").apply("{{ instruction }} {{ sentence }}")


def test_a_format_rewrites_every_demo_turn_and_the_query_alike():
    p = Prompt(instruction="Classify.", template=SST2, demos=DEMOS, demo_format="turns")
    fmt = Format(separator=" - ", casing="upper")
    q = apply_format(p, fmt)
    assert q.demo_format == "turns"
    msgs = q.render(Example(id="x", inputs={"sentence": "dull"}, target="negative"))
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1].content == "Classify.\n\nREVIEW - great\nSENTIMENT -" and msgs[2].content == "positive"
    assert msgs[3].content == "Classify.\n\nREVIEW - dull\nSENTIMENT -"
