"""A metric that raises or returns a non-number records an error on that example (``error_kind="metric"``), on
every scoring path (generation, label scoring, In-Context Sampling); it never becomes a silent score."""

from __future__ import annotations

import logging

from promptopt import Budget, EvalResult, Evaluator, Example, FakeModel, ModelClient, Prompt, make_task
from promptopt.core.sampling import InContextSampling
from promptopt.models.budget import BudgetTracker


def examples(prefix: str) -> list[Example]:
    words = ["cat", "dog", "owl", "yak"]
    return [Example(id=f"{prefix}-{i}", inputs={"word": w}, target=w) for i, w in enumerate(words)]


def picky(prediction: str, example: Example) -> float:
    """Raises on 'dog', answers a string on 'owl', scores the others."""
    if example.answer == "dog":
        raise KeyError("no dogs")
    if example.answer == "owl":
        return "1.0"  # type: ignore[return-value]
    return float(prediction == example.answer)


DEMO_TEMPLATE = "{{ instruction }}\n{% for d in demos %}Example: {{ d.word }}\n{% endfor %}Word: {{ word }}"


def task(template: str = "{{ instruction }}\nWord: {{ word }}", **kwargs: object):
    return make_task(
        name="words",
        template=template,
        instruction="Repeat the word.",
        train=examples("train"),
        dev=examples("dev"),
        test=examples("test"),
        metric=picky,
        **kwargs,  # type: ignore[arg-type]
    )


def echo(request) -> str:
    return request.messages[-1].content.split("Word: ")[1].split("\n")[0]


def evaluate(t, model, prompt: Prompt | None = None, mode: str = "auto") -> EvalResult:
    client = ModelClient(model, cache=None, budget=BudgetTracker(budget=Budget()))
    return Evaluator(t, client, mode=mode).evaluate(prompt or t.seed_prompt())  # type: ignore[arg-type]


def check(result: EvalResult) -> None:
    by_id = {r.example_id: r for r in result.records}
    assert by_id["dev-0"].error is None and by_id["dev-0"].score == 1.0
    raised, strange = by_id["dev-1"], by_id["dev-2"]
    assert raised.error_kind == "metric" and raised.score == 0.0
    assert raised.error == "metric 'picky' raised KeyError: 'no dogs'"
    assert raised.prediction == "dog"  # the answer is kept: it was the metric that failed
    assert strange.error_kind == "metric" and strange.score == 0.0
    assert strange.error == "metric 'picky' returned '1.0' (str), not a number"
    assert result.n_metric_errors == 2 and result.n_parse_errors == 0 and result.n_api_errors == 0
    assert result.summary()["metric_errors"] == 2
    assert "2 metric errors" in result.format()
    assert EvalResult.from_dict(result.to_dict()).records == result.records


def test_generation_records_metric_errors_per_example(caplog):
    with caplog.at_level(logging.WARNING, logger="promptopt"):
        result = evaluate(task(), FakeModel(fn=echo))
    assert result.mode == "generate"
    check(result)
    assert "2 of 4 examples" in caplog.text and "the metric failed" in caplog.text


def test_label_scoring_records_metric_errors_per_example():
    labels = ["cat", "dog", "owl", "yak"]

    def score_fn(request):
        return [-0.1 if c == echo(request) else -3.0 for c in request.continuations]

    result = evaluate(task(labels=labels), FakeModel(score_fn=score_fn), mode="score")
    assert result.mode == "score"
    check(result)


def test_in_context_sampling_aggregates_answers_despite_sub_prompt_metric_errors():
    t = task(template=DEMO_TEMPLATE)
    demos = ((t.train[0],), (t.train[1],), (t.train[2],))
    ics = InContextSampling(k=3, shots=1, demo_sets=demos)
    prompt = Prompt(instruction=t.instruction, template=t.template.source, system=t.system, ics=ics)
    result = evaluate(t, FakeModel(fn=echo), prompt)
    check(result)
    assert all("<metric error>" not in r.raw for r in result.records)  # the sub-prompts did answer


def test_a_good_function_metric_scores_like_a_built_in():
    t = make_task(
        name="words",
        template="{{ instruction }}\nWord: {{ word }}",
        instruction="Repeat the word.",
        train=examples("train"),
        dev=examples("dev"),
        test=examples("test"),
        metric=lambda prediction, example: prediction == example.answer,
    )
    result = evaluate(t, FakeModel(fn=echo))
    assert result.mean == 1.0 and result.n_metric_errors == 0
    assert result.metric.endswith("<lambda>")
