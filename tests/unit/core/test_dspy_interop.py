"""promptopt values as DSPy values and back: Prompt.to_dspy, from_dspy, dspy_metric, task_from_dspy."""

from __future__ import annotations

import dataclasses
from typing import Literal

import pytest

from promptopt.core.data import Example
from promptopt.core.dspy_interop import dspy_metric, from_dspy, task_from_dspy
from promptopt.core.exceptions import ConfigError, DataError
from promptopt.testing import TOY_TEMPLATE, make_toy_task

dspy = pytest.importorskip("dspy")


def test_a_prompt_goes_to_dspy_and_comes_back_unchanged() -> None:
    task = make_toy_task()
    prompt = dataclasses.replace(task.seed_prompt(), instruction="Reverse it.", demos=task.train[:3])
    program = prompt.to_dspy(task)
    assert isinstance(program, dspy.Predict)
    assert program.signature.instructions == "Reverse it."
    assert list(program.signature.input_fields) == ["word"] and list(program.signature.output_fields) == ["answer"]
    assert [d.answer for d in program.demos] == [ex.answer for ex in task.train[:3]]
    back = from_dspy(program, task.seed_prompt(), inputs=["word"], origin="dspy-test")
    assert back.id == prompt.id and back.demos == prompt.demos and back.origin == "dspy-test"
    assert back.parents == (task.seed_prompt().id,)


def test_to_dspy_without_a_task_reads_the_template() -> None:
    assert list(make_toy_task().seed_prompt().to_dspy().signature.input_fields) == ["word"]


def test_from_dspy_drops_demos_without_an_answer_and_refuses_several_predictors() -> None:
    task = make_toy_task()
    program = task.seed_prompt().to_dspy(task)
    program.demos = [dspy.Example(word="cat", answer="tac"), dspy.Example(word="dog"), {"word": "sun", "answer": "nus"}]
    back = from_dspy(program, task.seed_prompt(), inputs=["word"])
    assert [(d.id, d.answer) for d in back.demos] == [("dspy-demo-0", "tac"), ("dspy-demo-2", "nus")]

    class Two(dspy.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = dspy.Predict("word -> answer"), dspy.Predict("word -> answer")

    with pytest.raises(ConfigError, match="2"):
        from_dspy(Two(), task.seed_prompt(), inputs=["word"])


def test_dspy_metric_parses_and_scores_like_the_evaluator() -> None:
    task = make_toy_task()
    metric = dspy_metric(task)
    ex = task.dev[0]
    gold = dspy.Example(word=ex.inputs["word"], answer=ex.answer, promptopt_id=ex.id).with_inputs("word")
    assert metric(gold, dspy.Prediction(answer=f"{ex.answer}\nmore")) == 1.0  # first_line parser
    assert metric(gold, dspy.Prediction(answer="wrong")) == 0.0
    assert metric(gold, dspy.Prediction()) == 0.0  # no answer: 0, not an error
    assert metric(gold, dspy.Prediction(answer=ex.answer), trace=[]) is True  # bootstrapping: pass/fail
    assert metric(gold, dspy.Prediction(answer=ex.answer), [], "predict", []) == 1.0  # GEPA: a score
    stranger = dspy.Example(word="abc", answer="cba").with_inputs("word")  # not one of the task's examples
    assert metric(stranger, dspy.Prediction(answer="cba")) == 1.0


class Sentiment(dspy.Signature):
    """Classify the sentiment of the review."""

    review: str = dspy.InputField()
    sentiment: Literal["positive", "negative"] = dspy.OutputField()


def reviews(n: int) -> list[object]:
    return [
        dspy.Example(
            review=f"review {i} {'good' if i % 2 else 'bad'}", sentiment="positive" if i % 2 else "negative"
        ).with_inputs("review")
        for i in range(n)
    ]


def exact(example: object, prediction: object, trace: object = None) -> bool:
    return bool(example.sentiment == prediction.sentiment)  # type: ignore[attr-defined]


def test_task_from_dspy_builds_a_classification_task_with_the_signatures_prefixes() -> None:
    task = task_from_dspy(Sentiment, reviews(12), exact, name="sentiment")
    assert task.labels == ("positive", "negative")
    assert [len(task.train), len(task.dev), len(task.test)] == [6, 3, 3]
    assert task.instruction == "Classify the sentiment of the review."
    prompt = dataclasses.replace(task.seed_prompt(), demos=task.train[:1])
    user = prompt.render(task.dev[0])[-1].content
    demo = task.train[0]
    assert f"Review: {demo.inputs['review']}\nSentiment: {demo.answer}\n" in user
    assert user.endswith(f"Review: {task.dev[0].inputs['review']}\nSentiment:")
    ex = task.dev[0]
    assert task.metric(ex.answer, ex) == 1.0 and task.metric("wrong", ex) == 0.0
    assert task.metric.name == "dspy:exact"
    answer = task.seed_prompt().to_dspy(task).signature.output_fields["answer"]
    assert answer.json_schema_extra["desc"] == "one of: positive, negative"


def test_task_from_dspy_takes_given_splits_and_ids() -> None:
    rows = [dspy.Example(id=f"q{i}", question=f"{i}+1?", answer=str(i + 1)).with_inputs("question") for i in range(6)]
    with pytest.raises(ConfigError, match="reserved"):  # an output named like a template variable is fine …
        task_from_dspy("answer -> question", rows, exact)  # … an input called 'answer' is not
    renamed = [dspy.Example(id=r.id, question=r.question, result=r.answer) for r in rows]
    task = task_from_dspy("question -> result", renamed[:2], exact, devset=renamed[2:4], testset=renamed[4:])
    assert [ex.id for ex in task.dev] == ["q2", "q3"] and task.test[0].target == "5" and task.labels is None
    assert "Question: {{ question }}" in task.template.source and TOY_TEMPLATE not in task.template.source


def test_task_from_dspy_refuses_what_it_cannot_represent() -> None:
    with pytest.raises(ConfigError, match="one output"):
        task_from_dspy("question -> answer, reason", reviews(8), exact)
    with pytest.raises(DataError, match="lacks"):
        task_from_dspy(Sentiment, [dspy.Example(review="x")] * 8, exact)
    with pytest.raises(DataError, match="too few"):
        task_from_dspy(Sentiment, reviews(3), exact)


def test_example_ids_travel_through_dspy() -> None:
    task = make_toy_task()
    program = task.seed_prompt().to_dspy(task)
    program.demos = [dspy.Example(word="cat", answer="tac", promptopt_id="toy-cat")]
    assert from_dspy(program, task.seed_prompt(), inputs=["word"]).demos == (
        Example(id="toy-cat", inputs={"word": "cat"}, target="tac"),
    )
