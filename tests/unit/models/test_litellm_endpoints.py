"""Several api_base endpoints for one LiteLLMModel: load spread, failover, cool-down, per-endpoint rate limits —
against loopback servers on 127.0.0.1."""

from __future__ import annotations

import importlib.util

import pytest

from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Message
from promptopt.models import GenerationRequest, get_model
from promptopt.models.endpoints import Endpoint, EndpointPool
from promptopt.models.litellm import LiteLLMModel
from promptopt.testing.openai_server import OpenAIServer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")


def req(i: int) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", f"question {i}"),))


def pooled(*servers: OpenAIServer, spec: str = "litellm:openai/test-model", **options: object) -> LiteLLMModel:
    bases = [s.base_url + "/v1" for s in servers]
    model = get_model(spec, api_base=bases, api_key="sk-test", backoff=0.01, **options)
    assert isinstance(model, LiteLLMModel)
    return model


def answered(srv: OpenAIServer) -> int:
    return sum(r.answered for r in srv.requests)


def test_load_spreads_over_healthy_endpoints() -> None:
    with OpenAIServer(latency=0.02) as a, OpenAIServer(latency=0.02) as b:
        model = pooled(a, b, max_concurrency=8)
        out = model.generate([req(i) for i in range(40)])
    assert [c.text for c in out] == [f"question {i}" for i in range(40)]
    assert len(a.requests) + len(b.requests) == 40
    assert 15 <= len(a.requests) <= 25  # least busy first, ties in turn


def test_a_failing_endpoint_fails_over_and_is_cooled_down() -> None:
    with OpenAIServer(fault=lambda messages, params: 500) as dead, OpenAIServer() as alive:
        model = pooled(dead, alive, max_concurrency=4, allowed_fails=2, cooldown=60)
        out = model.generate([req(i) for i in range(30)])
        later = model.generate([req(i) for i in range(30, 40)])
    assert all(c.error is None for c in out + later)
    assert answered(alive) == 40 and answered(dead) == 0
    assert len(dead.requests) <= 2 + 4  # the allowed failures, plus what was in flight when it cooled down
    assert model._pool.endpoints[0].cooldown_until > 0


def test_a_hanging_endpoint_times_out_and_fails_over() -> None:
    with OpenAIServer(hang=True) as hung, OpenAIServer() as alive:
        model = pooled(hung, alive, max_concurrency=4, allowed_fails=1, timeout=0.5)
        out = model.generate([req(i) for i in range(12)])
    assert all(c.error is None for c in out)
    assert answered(alive) == 12 and len(hung.requests) <= 4


def test_all_endpoints_failing_gives_errors_after_retries() -> None:
    with OpenAIServer(fault=lambda m, p: 503) as a, OpenAIServer(fault=lambda m, p: 503) as b:
        model = pooled(a, b, max_retries=2, allowed_fails=1, cooldown=60)
        (out,) = model.generate([req(0)])
    assert out.error is not None and "status 503" in out.error and "after 3 attempts" in out.error
    assert len(a.requests) + len(b.requests) == 3


def test_identity_and_rate_limits_are_per_endpoint() -> None:
    with OpenAIServer() as a, OpenAIServer() as b:
        both = pooled(a, b, spec="litellm:openai/limited", rpm=60)
        one = get_model("litellm:openai/limited", api_base=b.base_url + "/v1", api_key="sk-test", rpm=60)
        assert isinstance(one, LiteLLMModel)
        # the cache key (name) never depends on the endpoints, so answers are shared whoever gave them
        assert both.name == one.name == "litellm:openai/limited"
        first, second = both._pool.endpoints
        assert first.rpm is not second.rpm and second.rpm is one._pool.endpoints[0].rpm
        assert repr(both) == f"LiteLLMModel('openai/limited', api_base={[a.base_url + '/v1', b.base_url + '/v1']!r})"
    with pytest.raises(ConfigError, match="api_base"):
        get_model("litellm:openai/x", api_base=[], api_key="none")


def test_pool_cool_down_ends_and_success_resets_failures() -> None:
    now = [0.0]
    first, second = Endpoint("a"), Endpoint("b")
    pool = EndpointPool([first, second], allowed_fails=2, cooldown=10, clock=lambda: now[0])
    failure = ConnectionError("down")
    first.in_flight, second.in_flight = 3, 1  # done() closes an attempt
    assert pool.done(first, failure, True)  # the other endpoint is ready: retry there at once
    pool.done(first, None, False)  # a success resets the count
    assert first.fails == 0 and first.cooldown_until == 0
    pool.done(first, failure, True)
    pool.done(second, failure, False)  # not retryable (e.g. a 400): not the endpoint's fault, not counted
    assert second.fails == 0
    pool.done(first, failure, True)  # second failure in a row: cooled down
    assert first.cooldown_until == 10 and pool.available() == [second]
    assert {pool.pick().api_base for _ in range(3)} == {"b"}
    now[0] = 10.0
    assert pool.available() == [first, second] and pool.pick() is first  # least busy again
    with pytest.raises(ValueError):
        EndpointPool([])
