"""The response cache, budget accounting and ModelClient (cache first, then budget, then the backend)."""

from __future__ import annotations

import json

import pytest

from promptopt import Budget, BudgetExhausted, ConfigError, FakeModel, ModelClient, ResponseCache, Usage
from promptopt.core.messages import Message
from promptopt.models.base import GenerationRequest, ScoreRequest
from promptopt.models.budget import BudgetTracker
from promptopt.models.cache import request_key


def req(text: str = "hello", **kw) -> GenerationRequest:
    return GenerationRequest(messages=(Message("system", "sys"), Message("user", text)), **kw)


def key(r, model: str = "fake") -> str:
    return request_key(model, r.key())


def client(model=None, *, cache=None, budget: Budget | None = None, role: str = "task", batch_size: int = 32):
    return ModelClient(
        model or FakeModel(),
        cache=cache,
        budget=BudgetTracker(budget=budget or Budget()),
        role=role,
        batch_size=batch_size,
    )


# -- cache keys -------------------------------------------------------------------------------------------


def test_same_request_same_key():
    assert key(req("a b c", max_tokens=5)) == key(req("a b c", max_tokens=5))


@pytest.mark.parametrize(
    "other",
    [
        req("hello!"),
        GenerationRequest(messages=(Message("system", "other"), Message("user", "hello"))),
        GenerationRequest(messages=(Message("user", "hello"),)),
        req(max_tokens=65),
        req(temperature=0.7),
        req(stop=("\n",)),
    ],
)
def test_everything_that_changes_the_output_changes_the_key(other):
    assert key(other) != key(req())


def test_model_name_is_part_of_the_key():
    assert key(req(), "model-a") != key(req(), "model-b")


def test_sample_index_matters_only_when_sampling():
    assert key(req(temperature=0.7, sample=1)) != key(req(temperature=0.7, sample=2))
    assert key(req(temperature=0.0, sample=1)) == key(req(temperature=0.0, sample=2))


def test_score_and_generate_requests_do_not_collide():
    messages = (Message("user", "x"),)
    s = ScoreRequest(messages=messages, continuations=("a", "b"))
    assert key(s) != key(GenerationRequest(messages=messages))
    assert key(s) != key(ScoreRequest(messages=messages, continuations=("b", "a")))


# -- cache storage ----------------------------------------------------------------------------------------


def test_cache_persists_across_instances_on_the_same_file(tmp_path):
    path = tmp_path / "sub" / "cache.sqlite"
    c1 = ResponseCache(path)
    c1.put_many({"k1": {"text": "one"}, "k2": {"text": "two"}})
    c1.close()
    c2 = ResponseCache(path)
    assert c2.get_many(["k1", "k2", "missing"]) == {"k1": {"text": "one"}, "k2": {"text": "two"}}
    assert len(c2) == 2


def test_client_hit_after_miss_and_across_cache_instances(tmp_path):
    path = tmp_path / "cache.sqlite"
    m1 = FakeModel(mapping={"hello": "world"})
    out = client(m1, cache=ResponseCache(path)).generate([req()])
    assert out[0].text == "world" and not out[0].cached
    m2 = FakeModel(mapping={"hello": "DIFFERENT"})  # same name: a cache hit must not reach the model
    c2 = client(m2, cache=ResponseCache(path))
    again = c2.generate([req()])
    assert again[0].text == "world" and again[0].cached
    assert m2.requests == []
    assert c2.budget.total.calls == 0 and c2.budget.total.cache_hits == 1


def test_errors_are_not_cached():
    cache = ResponseCache(":memory:")
    failing = FakeModel(fail=lambda r: "HTTP 503")
    out = client(failing, cache=cache).generate([req()])
    assert out[0].error == "HTTP 503"
    assert len(cache) == 0
    healthy = FakeModel(mapping={"hello": "ok"})
    assert client(healthy, cache=cache).generate([req()])[0].text == "ok"  # the retry reaches the model
    assert len(healthy.requests) == 1
    assert len(cache) == 1


def test_duplicate_requests_in_one_batch_are_sent_once():
    m = FakeModel(mapping={"hello": "w"})
    c = client(m, cache=ResponseCache(":memory:"))
    out = c.generate([req(), req("other"), req()])
    assert [o.text for o in out] == ["w", "", "w"]
    assert out[2].cached
    assert len(m.requests) == 2
    assert c.budget.total.calls == 2


# -- budget -----------------------------------------------------------------------------------------------


def test_budget_validates_limits():
    with pytest.raises(ConfigError, match=r"field 'budget.max_calls': must be positive"):
        Budget(max_calls=0)
    assert Budget().unlimited
    assert not Budget(max_cost=1.0).unlimited


def test_call_budget_cuts_the_batch_and_caches_the_answered_part():
    m = FakeModel()
    cache = ResponseCache(":memory:")
    c = client(m, cache=cache, budget=Budget(max_calls=5))
    requests = [req(f"q{i}") for i in range(8)]
    with pytest.raises(BudgetExhausted, match=r"call budget spent \(5/5\)"):
        c.generate(requests)
    assert len(m.requests) == 5  # exactly what was left, not one more
    assert c.budget.total.calls == 5
    assert len(cache) == 5  # nothing answered is lost

    # the answered part is free from now on, even though the budget is spent
    out = c.generate(requests[:5])
    assert all(o.cached for o in out)
    assert len(m.requests) == 5
    assert c.budget.total.cache_hits == 5

    # but anything new is refused, before reaching the model
    with pytest.raises(BudgetExhausted):
        c.generate(requests[5:6])
    assert len(m.requests) == 5


def test_call_budget_is_exact_across_small_batches():
    m = FakeModel()
    c = client(m, budget=Budget(max_calls=7), batch_size=3)
    with pytest.raises(BudgetExhausted):
        c.generate([req(f"q{i}") for i in range(10)])
    assert len(m.requests) == 7
    assert c.budget.limited().calls == 7


def test_token_budget_stops_at_the_first_batch_that_reaches_it():
    m = FakeModel(fn=lambda r: "one two three")  # prompt 'sys' + 'q' = 2 tokens, completion 3 tokens
    c = client(m, budget=Budget(max_tokens=12), batch_size=2)
    with pytest.raises(BudgetExhausted, match="token budget spent"):
        c.generate([req(f"q{i}") for i in range(6)])
    # batch 1: 10 tokens (under), batch 2 goes out and crosses the limit, batch 3 is refused
    assert len(m.requests) == 4
    assert c.budget.total.tokens == 20


def test_tokens_and_cost_are_accounted_per_role():
    m = FakeModel(fn=lambda r: "a b", cost_per_token=0.01)
    task = client(m)
    proposer = task.with_role("proposer")
    task.generate([req("x y z")])  # prompt: 'sys' + 3 words = 4 tokens; completion 2
    proposer.generate([req("p"), req("q")])  # 2 x (2 + 2)
    by_role = task.budget.by_role
    assert by_role["task"] == Usage(calls=1, prompt_tokens=4, completion_tokens=2, cost=pytest.approx(0.06))
    assert by_role["proposer"].calls == 2
    assert by_role["proposer"].tokens == 8
    assert by_role["proposer"].cost == pytest.approx(0.08)
    assert task.budget.total.calls == 3
    assert task.budget.total.cost == pytest.approx(0.14)


def test_api_errors_are_counted_and_charged():
    m = FakeModel(fail=lambda r: "boom" if "bad" in r.messages[-1].content else None)
    c = client(m)
    out = c.generate([req("good"), req("bad")])
    assert out[0].error is None and out[1].error == "boom"
    assert c.budget.total.calls == 2
    assert c.budget.total.errors == 1


def test_report_role_is_never_limited():
    m = FakeModel()
    task = client(m, budget=Budget(max_calls=2))
    with pytest.raises(BudgetExhausted):
        task.generate([req("a"), req("b"), req("c")])
    report = task.with_role("report")
    out = report.generate([req(f"r{i}") for i in range(5)])
    assert len(out) == 5 and not any(o.error for o in out)
    assert task.budget.by_role["report"].calls == 5
    assert task.budget.limited().calls == 2
    assert task.budget.total.calls == 7
    with pytest.raises(BudgetExhausted):  # the search roles are still stopped
        task.with_role("proposer").generate([req("z")])


def test_score_requests_count_as_one_call_each():
    m = FakeModel(mapping={"x": "yes"})
    c = client(m, budget=Budget(max_calls=3))
    requests = [ScoreRequest(messages=(Message("user", f"x {i}"),), continuations=("yes", "no")) for i in range(3)]
    out = c.score(requests)
    assert [s.logprobs for s in out] == [(0.0, -10.0)] * 3
    assert c.budget.total.calls == 3
    assert c.budget.exhausted_reason() == "call budget spent (3/3)"


def test_usage_json_save_and_restore(tmp_path):
    path = tmp_path / "usage.json"
    tracker = BudgetTracker(budget=Budget(max_calls=10), path=path)
    c = ModelClient(FakeModel(cost_per_token=0.5), cache=None, budget=tracker)
    c.generate([req("a"), req("b"), req("c")])
    saved = json.loads(path.read_text())  # written after every batch
    assert saved["total"]["calls"] == 3
    assert saved["by_role"]["task"]["calls"] == 3
    assert saved["budget"]["max_calls"] == 10

    restored = BudgetTracker(budget=Budget(max_calls=4))
    restored.restore(path)
    assert restored.by_role == tracker.by_role
    assert restored.elapsed >= saved["elapsed_seconds"]
    # the restored run continues from the spent budget: only 1 call is left
    c2 = ModelClient(FakeModel(), cache=None, budget=restored)
    with pytest.raises(BudgetExhausted):
        c2.generate([req("d"), req("e")])
    assert restored.limited().calls == 4


def test_fraction_used():
    tracker = BudgetTracker(budget=Budget(max_calls=10))
    assert tracker.fraction_used() == 0.0
    tracker.charge("task", Usage(calls=4))
    tracker.charge("report", Usage(calls=100))  # not limited
    assert tracker.fraction_used() == pytest.approx(0.4)
    assert BudgetTracker().fraction_used() is None
