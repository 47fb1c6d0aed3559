"""promptopt models as dspy.LM: every DSPy call goes through the ModelClient (cache, budget, role)."""

from __future__ import annotations

from pathlib import Path

import pytest

from promptopt.core.exceptions import BackendError, BudgetExhausted
from promptopt.models.budget import Budget, BudgetTracker
from promptopt.models.cache import ResponseCache
from promptopt.models.client import ModelClient
from promptopt.models.dspy_lm import EngineStopped, dspy_lm
from promptopt.models.fake import FakeModel
from promptopt.testing.dspy_fakes import dspy_toy_model

dspy = pytest.importorskip("dspy")


def reverse_program() -> object:
    signature = dspy.Signature({"word": dspy.InputField(), "answer": dspy.OutputField()}, "Reverse the word.")
    return dspy.Predict(signature)


def client(tmp_path: Path, model: FakeModel, *, role: str = "task", calls: int | None = None) -> ModelClient:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    return ModelClient(model, cache=cache, budget=BudgetTracker(budget=Budget(max_calls=calls)), role=role)


def test_a_dspy_program_runs_on_a_promptopt_model_and_is_charged_to_the_clients_role(tmp_path: Path) -> None:
    c = client(tmp_path, dspy_toy_model(), role="proposer")
    with dspy.context(lm=dspy_lm(c)):
        assert reverse_program()(word="cat").answer == "tac"
    assert c.budget.by_role["proposer"].calls == 1
    request = c.model.requests[-1]  # type: ignore[attr-defined]
    assert request.messages[0].role == "system" and "[[ ## word ## ]]" in request.messages[-1].content


def test_dspy_calls_share_promptopt_cache_a_rerun_costs_nothing(tmp_path: Path) -> None:
    first, again = client(tmp_path, dspy_toy_model()), client(tmp_path, dspy_toy_model())
    for c in (first, again):
        with dspy.context(lm=dspy_lm(c)):
            reverse_program()(word="dog")
    assert first.budget.by_role["task"].calls == 1
    assert again.budget.by_role["task"].calls == 0 and again.budget.by_role["task"].cache_hits == 1


def test_repeated_sampled_requests_get_new_sample_indices(tmp_path: Path) -> None:
    c = client(tmp_path, dspy_toy_model())
    lm = dspy_lm(c)
    with dspy.context(lm=lm):
        for _ in range(2):
            reverse_program()(word="sun", config={"temperature": 0.7})
    samples = [r.sample for r in c.model.requests]  # type: ignore[attr-defined]
    assert samples == [1, 2] and c.budget.by_role["task"].calls == 2


def test_max_tokens_is_capped(tmp_path: Path) -> None:
    c = client(tmp_path, dspy_toy_model())
    with dspy.context(lm=dspy_lm(c, max_tokens=20)):
        reverse_program()(word="map", config={"max_tokens": 4000})
    assert c.model.requests[-1].max_tokens == 20  # type: ignore[attr-defined]


def test_a_spent_budget_escapes_dspy_as_engine_stopped(tmp_path: Path) -> None:
    c = client(tmp_path, dspy_toy_model(), calls=1)
    with dspy.context(lm=dspy_lm(c)):
        reverse_program()(word="cup")
        with pytest.raises(EngineStopped) as stopped:
            reverse_program()(word="box")  # DSPy's except-Exception fallbacks must not swallow it
    assert isinstance(stopped.value.cause, BudgetExhausted)
    assert c.budget.limited().calls == 1


def test_before_call_stops_dspy(tmp_path: Path) -> None:
    def stop() -> None:
        raise BudgetExhausted("kept for the final evaluation")

    c = client(tmp_path, dspy_toy_model())
    with dspy.context(lm=dspy_lm(c, before_call=stop)), pytest.raises(EngineStopped, match="kept for"):
        reverse_program()(word="jam")
    assert c.budget.limited().calls == 0


def test_a_failed_call_is_a_dspy_error_not_a_stop(tmp_path: Path) -> None:
    c = client(tmp_path, FakeModel(fail=lambda r: "backend down"))
    with dspy.context(lm=dspy_lm(c)), pytest.raises(dspy.utils.exceptions.LMError, match="backend down") as raised:
        reverse_program()(word="pen")  # DSPy's own error: Evaluate counts it against max_errors
    assert isinstance(raised.value.__cause__, BackendError)
    assert c.budget.by_role["task"].errors == 1


def test_a_bare_model_gets_its_own_uncached_client() -> None:
    lm = dspy_lm(dspy_toy_model(), role="task")
    with dspy.context(lm=lm):
        assert reverse_program()(word="lamp").answer == "pmal"
    assert lm.model == "promptopt/fake:dspy-toy"
