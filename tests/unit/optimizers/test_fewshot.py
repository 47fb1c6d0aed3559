"""fewshot: labeled and bootstrapped demos, inline vs chat turns, raced on dev within a planned budget."""

from __future__ import annotations

import pytest

import promptopt
from promptopt import Budget, ConfigError
from promptopt.models.base import GenerationRequest
from promptopt.models.fake import FakeModel, last_user
from promptopt.optimizers.fewshot import FewShotOptimizer
from promptopt.testing import make_toy_task


def query_word(request: GenerationRequest) -> str:
    return last_user(request.messages).rsplit("Word: ", 1)[-1].split("\n")[0].strip()


def turns_model(min_turns: int = 2) -> FakeModel:
    """Reverses the word (the right answer) only when it sees >= ``min_turns`` demos as chat turns."""

    def fn(request: GenerationRequest) -> str:
        word = query_word(request)
        turns = sum(m.role == "assistant" for m in request.messages)
        return word[::-1] if turns >= min_turns else word

    return FakeModel(fn=fn, name="fake:turns")


@pytest.fixture
def task():
    return make_toy_task(n_train=10, n_dev=12, n_test=10)


def run(task, model=None, **kw):
    kw.setdefault("budget", Budget(max_calls=400))
    kw.setdefault("cache", False)
    return promptopt.optimize(task, FewShotOptimizer(**kw.pop("config", {})), model or turns_model(), **kw)


def test_finds_demos_as_chat_turns_and_confirms_them(task):
    result = run(task)
    assert result.best_prompt.demo_format == "turns" and len(result.best_prompt.demos) >= 2
    assert result.best_dev["mean"] == 1.0 and result.best_test["mean"] == 1.0
    assert result.baseline_test["mean"] == 0.0  # the seed prompt repeats the word
    assert result.search["confirmed"] >= 1 and result.search["screened"] > result.search["confirmed"]
    assert result.stop_reason == "optimizer finished"


def test_a_demo_format_that_lost_the_first_race_is_not_tried_again(task):
    seen = []
    result = run(task, config={"chunk_size": 4}, callbacks=[seen.append])
    assert result.notes == [
        "fewshot: demo format inline dropped after the first race (its best candidate lost to turns: 1.00 vs 0.00 "
        "on the race examples)"
    ]
    raced = [e.record.prompt for e in seen if hasattr(e, "record") and e.record.prompt.origin == "fewshot"]
    assert [p.demo_format for p in raced[:4]] == ["inline", "turns", "inline", "turns"]  # the first race: both
    assert len(raced) > 4 and all(p.demo_format == "turns" for p in raced[4:])
    assert result.best_prompt.demo_format == "turns"


def test_no_format_is_dropped_when_the_race_cannot_tell_them_apart(task):
    result = run(task, model=turns_model(min_turns=99), config={"chunk_size": 4})
    assert result.notes == [] and result.best_prompt.id == result.seed_prompt.id


def test_inline_only_search_cannot_find_what_only_turns_give(task):
    result = run(task, config={"demo_formats": ("inline",)})
    assert result.best_prompt.id == result.seed_prompt.id
    assert result.selection.startswith("seed prompt kept: none of the")  # candidates were confirmed, none won


def test_a_tight_budget_still_confirms_the_best_candidates(task):
    # seed on dev (12) + a little: fewer candidates are raced, but the best ones are confirmed on full dev
    seen = []
    cache = promptopt.ResponseCache(":memory:")
    result = run(task, budget=Budget(max_calls=12 + 30), callbacks=[seen.append], cache=cache)
    trials = [e.record for e in seen if isinstance(e, promptopt.run.callbacks.TrialFinished)]
    assert result.search["confirmed"] == 2  # top_k: both reserved confirmations happened
    assert trials[-1].full and trials[-2].full  # the run ended on them, not cut off mid-race
    assert result.usage["by_role"]["task"]["calls"] <= 42


def test_a_budget_without_room_for_one_confirmation_is_refused_before_any_call(task):
    model = turns_model()
    # seed on dev (12) + one candidate's race (8) + its confirmation (12, worst case without a cache)
    with pytest.raises(ConfigError, match=r"--budget-calls 32"):
        run(task, model, budget=Budget(max_calls=31))
    assert model.requests == []


def test_bootstrapped_demos_carry_the_teachers_own_answers(task):
    # a teacher that answers in upper case: exact_match ignores case, so its answers pass and become the demos
    def fn(request: GenerationRequest) -> str:
        word = query_word(request)
        return word[::-1].upper() if sum(m.role == "assistant" for m in request.messages) >= 2 else word

    result = run(task, FakeModel(fn=fn, name="fake:upper"), run_dir=None)
    booted = [r for r in _history(task, fn) if str(r.prompt.meta.get("demos", "")).startswith("bootstrapped")]
    assert booted
    assert all(d.answer.isupper() for r in booted for d in r.prompt.demos)
    assert result.best_dev["mean"] == 1.0


def _history(task, fn):
    seen = []
    promptopt.optimize(
        task,
        FewShotOptimizer(),
        FakeModel(fn=fn, name="fake:upper"),
        budget=Budget(max_calls=400),
        cache=False,
        callbacks=[lambda e: seen.append(e.record) if isinstance(e, promptopt.run.callbacks.TrialFinished) else None],
    )
    return seen


def test_same_seed_same_cache_same_result_and_no_calls(task):
    cache = promptopt.ResponseCache(":memory:")
    first = run(task, cache=cache)
    model = turns_model()
    again = run(task, model, cache=cache)
    assert again.best_prompt.id == first.best_prompt.id and again.search == first.search
    assert model.requests == []


def test_dev_too_small_to_race_scores_candidates_on_full_dev(task):
    small = make_toy_task(n_train=10, n_dev=6, n_test=10)
    result = run(small, budget=Budget(max_calls=6 + 6 * 5))
    assert result.search == {"screened": 0, "confirmed": 5}
    assert result.best_prompt.demo_format == "turns"


def test_config_validation():
    with pytest.raises(ConfigError, match="demo_formats"):
        FewShotOptimizer(demo_formats=("chat",))
    with pytest.raises(ConfigError, match="shots"):
        FewShotOptimizer(shots=(0,))


def test_give_up_stops_racing_when_no_demo_set_beats_the_seed(task):
    def model() -> FakeModel:  # demos never help: every prompt repeats the word, as the seed does
        return FakeModel(fn=query_word, name="fake:repeat")

    patient = run(task, model(), config={"chunk_size": 4})
    quitter = run(task, model(), config={"chunk_size": 4, "give_up": True})
    assert patient.racing["races"] > 1 and quitter.racing["races"] == 1
    assert quitter.usage["by_role"]["task"]["calls"] < patient.usage["by_role"]["task"]["calls"]
    assert any("no demo set of the first race beat the seed prompt" in n for n in quitter.notes)
    helped = run(task, config={"chunk_size": 4, "give_up": True})  # turns_model: demos as turns do help
    assert helped.racing["races"] > 1 and helped.best_test["mean"] == 1.0
