"""The evaluator (label scoring vs generation, error records), bootstrap CIs and paired comparison."""

from __future__ import annotations

import pytest

from promptopt import Budget, EvalResult, Evaluator, ExampleRecord, FakeModel, ModelClient, compare
from promptopt.core.stats import bootstrap_ci, paired_comparison
from promptopt.models.base import ScoreRequest
from promptopt.models.budget import BudgetTracker
from promptopt.testing import TOY_BEST_INSTRUCTION, toy_expected_score, toy_model


def evaluator(task, model, *, mode="auto", budget=None) -> Evaluator:
    return Evaluator(task, ModelClient(model, cache=None, budget=BudgetTracker(budget=budget or Budget())), mode=mode)


def review(request) -> str:
    return request.messages[-1].content.split("Review: ")[1].split("\n")[0]


def oracle_scores(truth: dict[str, str]):
    """score_fn: the true label gets the highest log-prob."""

    def score_fn(r: ScoreRequest):
        want = truth[review(r)]
        return [-0.1 if c == want else -2.0 for c in r.continuations]

    return score_fn


def truth(task) -> dict[str, str]:
    return {ex.inputs["text"]: ex.answer for ex in task.dev}


def test_classification_uses_label_scoring(clf_task):
    model = FakeModel(score_fn=oracle_scores(truth(clf_task)))
    result = evaluator(clf_task, model).evaluate(clf_task.seed_prompt())
    assert result.mode == "score"
    assert result.mean == 1.0
    assert result.n == len(clf_task.dev)
    assert all(isinstance(r, ScoreRequest) for r in model.requests)
    assert model.requests[0].continuations == ("positive", "negative")
    rec = result.records[0]
    assert rec.prediction == clf_task.dev[0].answer
    assert rec.label_logprobs is not None and len(rec.label_logprobs) == 2
    assert result.calls == len(clf_task.dev)


def test_label_scoring_takes_the_argmax_whatever_the_text_says(clf_task):
    # the model would *say* 'positive' for everything, but its label scores prefer 'negative'
    model = FakeModel(default="positive", score_fn=lambda r: [-3.0, -1.0])
    result = evaluator(clf_task, model).evaluate(clf_task.seed_prompt())
    assert {r.prediction for r in result.records} == {"negative"}
    assert result.mean == 0.5


def test_generate_mode_parses_the_text(clf_task):
    t = truth(clf_task)
    model = FakeModel(fn=lambda r: f"I think it is {t[review(r)]}.", score_fn=lambda r: [0.0, 0.0])
    result = evaluator(clf_task, model, mode="generate").evaluate(clf_task.seed_prompt())
    assert result.mode == "generate"
    assert result.mean == 1.0
    assert result.records[0].raw.startswith("I think it is")
    assert result.records[0].prediction in ("positive", "negative")
    assert result.records[0].label_logprobs is None
    # the labels travel with the request, so a token-by-token backend can stop once one is complete
    assert all(r.labels == ("positive", "negative") for r in model.requests)


def test_completes_label() -> None:
    from promptopt.models import GenerationRequest

    req = GenerationRequest(messages=(), labels=("no", "not sure", "Yes"))
    assert req.completes_label(" yes") and req.completes_label("not sure")
    assert not req.completes_label("no")  # 'not sure' may follow
    assert not req.completes_label("ye") and not req.completes_label("yes!")
    assert "labels" not in GenerationRequest(messages=()).key()  # cache keys of other requests are unchanged


def test_generation_task_uses_generate_mode(toy_task):
    result = evaluator(toy_task, toy_model()).evaluate(toy_task.seed_prompt())
    assert result.mode == "generate"
    assert result.mean == pytest.approx(toy_expected_score(toy_task.instruction, toy_task.dev))


def test_api_and_parse_errors_are_recorded_apart(clf_task):
    def fail(r):
        return "HTTP 500: upstream" if "dull" in r.messages[-1].content else None

    def text(r):
        return "no idea" if "charming" in review(r) else truth(clf_task)[review(r)]

    model = FakeModel(fn=text, fail=fail)
    result = evaluator(clf_task, model, mode="generate").evaluate(clf_task.seed_prompt())
    by_text = {ex.inputs["text"]: rec for ex, rec in zip(clf_task.dev, result.records, strict=True)}

    api = by_text["dull and far too long"]
    assert (api.error_kind, api.error, api.prediction, api.score) == ("api", "HTTP 500: upstream", None, 0.0)
    parse = by_text["charming and funny"]
    assert (parse.error_kind, parse.prediction, parse.score, parse.raw) == ("parse", None, 0.0, "no idea")
    assert "label_set" in parse.error

    assert result.n_api_errors == 1
    assert result.n_parse_errors == 1
    assert result.mean == pytest.approx(6 / 8)
    failures = result.failures()
    assert parse in failures and api not in failures  # an API error is not the prompt's fault
    summary = result.summary()
    assert (summary["api_errors"], summary["parse_errors"], summary["n"]) == (1, 1, 8)
    assert "1 API errors" in result.format() and "1 unparsable" in result.format()


def test_api_error_in_label_scoring(clf_task):
    model = FakeModel(
        score_fn=oracle_scores(truth(clf_task)), fail=lambda r: "timeout" if "dull" in review(r) else None
    )
    result = evaluator(clf_task, model).evaluate(clf_task.seed_prompt())
    assert result.n_api_errors == 1 and result.n_parse_errors == 0
    assert result.mean == pytest.approx(7 / 8)


def test_malformed_logprobs_are_an_api_error(clf_task):
    result = evaluator(clf_task, FakeModel(score_fn=lambda r: [0.0])).evaluate(clf_task.seed_prompt())
    assert result.n_api_errors == len(clf_task.dev)


def test_evaluate_on_given_examples_and_splits(toy_task):
    ev = evaluator(toy_task, toy_model())
    prompt = toy_task.seed_prompt().with_instruction(TOY_BEST_INSTRUCTION, origin="test")
    sub = ev.evaluate(prompt, toy_task.dev[:3], split="dev-minibatch")
    assert (sub.n, sub.split, sub.mean) == (3, "dev-minibatch", 1.0)
    test = ev.evaluate(prompt, split="test")
    assert [r.example_id for r in test.records] == [ex.id for ex in toy_task.test]


def test_progress_callback(toy_task):
    seen = []
    ev = Evaluator(
        toy_task,
        ModelClient(toy_model(), cache=None, budget=BudgetTracker(), batch_size=5),
        progress=lambda done, total: seen.append((done, total)),
    )
    ev.evaluate(toy_task.seed_prompt())
    assert seen == [(5, 12), (10, 12), (12, 12)]


def test_eval_result_round_trips(clf_task):
    result = evaluator(clf_task, FakeModel(score_fn=oracle_scores(truth(clf_task)))).evaluate(clf_task.seed_prompt())
    again = EvalResult.from_dict(result.to_dict())
    assert again == result
    assert again.ci == result.ci


# -- confidence intervals ---------------------------------------------------------------------------------


def test_bootstrap_ci_contains_the_mean_and_is_deterministic():
    xs = [1.0] * 13 + [0.0] * 7
    lo, hi = bootstrap_ci(xs)
    assert lo < 0.65 < hi
    assert lo > 0.3 and hi < 0.95
    assert bootstrap_ci(xs) == (lo, hi)
    assert bootstrap_ci([1.0, 1.0]) == (1.0, 1.0)
    assert bootstrap_ci([]) == (0.0, 0.0)


def test_eval_result_ci_is_deterministic_across_runs(toy_task):
    a = evaluator(toy_task, toy_model()).evaluate(toy_task.seed_prompt())
    b = evaluator(toy_task, toy_model()).evaluate(toy_task.seed_prompt())
    lo, hi = a.ci
    assert lo <= a.mean <= hi
    assert lo < hi
    assert a.ci == b.ci


# -- paired comparison ------------------------------------------------------------------------------------


def records(scores: list[float], *, prefix: str = "e") -> tuple[ExampleRecord, ...]:
    return tuple(ExampleRecord(example_id=f"{prefix}{i}", prediction="x", score=s) for i, s in enumerate(scores))


def result(scores: list[float], prompt_id: str = "p") -> EvalResult:
    return EvalResult(prompt_id=prompt_id, split="test", mode="generate", records=records(scores))


def test_compare_b_better():
    a = result([0.0] * 20, "a")
    b = result([1.0] * 15 + [0.0] * 5, "b")
    c = compare(a, b)
    assert c.diff == pytest.approx(0.75)
    assert (c.mean_a, c.mean_b) == (0.0, 0.75)
    assert 0 < c.ci_low <= 0.75 <= c.ci_high <= 1.0
    assert c.significant
    assert (c.b_better, c.a_better, c.n) == (15, 0, 20)
    assert c.p_value < 0.05


def test_compare_sign_flips_when_swapped():
    a = result([1.0] * 12 + [0.0] * 8)
    b = result([1.0] * 6 + [0.0] * 14)
    ab, ba = compare(a, b), compare(b, a)
    assert ab.diff == pytest.approx(-0.3) and ba.diff == pytest.approx(0.3)
    assert ab.ci_high < 0 < ba.ci_low
    assert (ab.b_better, ab.a_better) == (ba.a_better, ba.b_better) == (0, 6)


def test_compare_no_difference_is_not_significant():
    xs = [1.0, 0.0] * 10
    ys = [0.0, 1.0] * 10  # same mean, every example differs
    c = compare(result(xs), result(ys))
    assert c.diff == 0.0
    assert c.ci_low < 0 < c.ci_high
    assert not c.significant
    assert c.p_value > 0.5
    same = compare(result(xs), result(xs))
    assert (same.diff, same.p_value, same.significant) == (0.0, 1.0, False)


def test_compare_pairs_by_example_id():
    a = EvalResult(prompt_id="a", split="test", mode="generate", records=records([0.0, 0.0, 1.0]))
    b_recs = (*reversed(records([1.0, 1.0])), ExampleRecord(example_id="other", prediction="x", score=0.0))
    b = EvalResult(prompt_id="b", split="test", mode="generate", records=b_recs)
    c = compare(a, b)
    assert c.n == 2  # only e0 and e1 are scored by both
    assert c.diff == 1.0


def test_paired_comparison_rejects_unequal_lists():
    with pytest.raises(ValueError, match="equally long"):
        paired_comparison([1.0], [1.0, 0.0])
