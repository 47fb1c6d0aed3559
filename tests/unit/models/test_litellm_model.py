"""LiteLLMModel against the real OpenAI-compatible test server over 127.0.0.1 (no external network)."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

import promptopt.models
from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Message
from promptopt.models import GenerationRequest, get_model
from promptopt.models.litellm import LiteLLMModel, _load_litellm, _retry_after
from promptopt.testing.openai_server import FAULT_KINDS, FaultRates, OpenAIServer, echo_responder

SRC = Path(promptopt.models.__file__).resolve().parents[2]
# litellm is imported by LiteLLMModel itself (which first disables its network cost-map lookup)
pytestmark = pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")


def req(text: str, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(messages=(Message("user", text),), **kwargs)  # type: ignore[arg-type]


def model_for(srv: OpenAIServer, spec: str = "litellm:openai/test-model", **options: object) -> LiteLLMModel:
    options = {"api_base": srv.base_url + "/v1", "api_key": "sk-test", "backoff": 0.01, **options}
    model = get_model(spec, **options)
    assert isinstance(model, LiteLLMModel)
    return model


def last_user(messages: list[dict]) -> str:
    return echo_responder(messages, {})


def test_batch_comes_back_in_request_order() -> None:
    def slow_first(messages: list[dict], params: dict) -> str:
        i = int(last_user(messages).split()[-1])
        time.sleep(0.01 * (20 - i))  # early requests finish last
        return f"answer {i}"

    with OpenAIServer(slow_first) as srv:
        out = model_for(srv).generate([req(f"question {i}") for i in range(20)])
    assert [c.text for c in out] == [f"answer {i}" for i in range(20)]
    assert all(c.error is None and not c.cached for c in out)
    assert len(srv.requests) == 20


def test_concurrency_limit_is_respected() -> None:
    with OpenAIServer(latency=0.1) as srv:
        out = model_for(srv, max_concurrency=3).generate([req(f"q {i}") for i in range(12)])
    assert all(c.error is None for c in out)
    assert srv.max_in_flight == 3  # 12 requests, never more than 3 at the server at once


@pytest.mark.parametrize("status", [429, 500])
def test_transient_errors_are_retried(status: int) -> None:
    with OpenAIServer(fail_first=2, fail_status=status) as srv:
        (out,) = model_for(srv).generate([req("hello")])
    assert out.error is None and out.text == "hello"
    assert [r.status for r in srv.requests] == [status, status, 200]


def test_persistent_error_is_recorded_on_its_completion_only() -> None:
    def fault(messages: list[dict], params: dict) -> int | None:
        return 500 if last_user(messages) == "bad" else None

    with OpenAIServer(fault=fault) as srv:
        out = model_for(srv, max_retries=2).generate([req("a"), req("bad"), req("c")])
    assert [c.text for c in out] == ["a", "", "c"]
    assert out[0].error is None and out[2].error is None
    error = out[1].error
    assert error is not None and "\n" not in error
    assert error.startswith("InternalServerError (status 500) after 3 attempts:")
    assert sum(r.body["messages"][-1]["content"] == "bad" for r in srv.requests) == 3


def test_auth_errors_are_not_retried_and_hide_the_key() -> None:
    with OpenAIServer(api_key="sk-other") as srv:
        (out,) = model_for(srv).generate([req("hello")])
    assert out.error is not None and out.error.startswith("AuthenticationError (status 401):")
    assert "sk-test" not in out.error
    assert len(srv.requests) == 1


def test_timeout_is_passed_through_and_ends_each_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    litellm = _load_litellm()
    timeouts: list[float] = []
    acompletion = litellm.acompletion

    async def spy(**kwargs: object) -> object:
        timeouts.append(kwargs["timeout"])  # type: ignore[arg-type]
        return await acompletion(**kwargs)

    monkeypatch.setattr(litellm, "acompletion", spy)
    with OpenAIServer(hang=True) as srv:
        (out,) = model_for(srv, timeout=0.3, max_retries=1).generate([req("hello")])
        abandoned = [r.status for r in srv.requests]  # the server never answered either attempt
    assert out.error is not None and out.error.startswith("Timeout (status 408) after 2 attempts")
    assert timeouts == [0.3, 0.3] and abandoned == [None, None]


def test_connection_refused_is_an_error() -> None:
    srv = OpenAIServer()  # bound, then closed: nothing listens on its port
    base = srv.base_url
    srv.stop()
    model = get_model("litellm:openai/test-model", api_base=base + "/v1", api_key="sk-test", max_retries=1,
                      backoff=0.01, timeout=2.0)  # fmt: skip
    (out,) = model.generate([req("hello")])
    assert out.error is not None and "after 2 attempts" in out.error


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_every_injected_fault_is_retried_then_reported_on_one_line(kind: str) -> None:
    with OpenAIServer(fault_rates=FaultRates(**{kind: 1.0}, retry_after=0.01)) as srv:  # type: ignore[arg-type]
        (out,) = model_for(srv, timeout=0.3, max_retries=1).generate([req("hello")])
        faults = [r.fault for r in srv.requests]
    assert out.error is not None and "\n" not in out.error and "after 2 attempts" in out.error
    assert faults == [kind, kind]


def test_faults_at_set_rates_are_recovered_or_counted_per_request() -> None:
    rates = FaultRates(rate_limit=0.1, server_error=0.1, malformed=0.1, truncated=0.1, reset=0.1, retry_after=0.01)
    with OpenAIServer(fault_rates=rates) as srv:
        out = model_for(srv, max_retries=2).generate([req(f"question {i}") for i in range(60)])
        log = list(srv.requests)
    attempts = {
        f"question {i}": [r for r in log if r.body["messages"][-1]["content"] == f"question {i}"] for i in range(60)
    }
    for i, completion in enumerate(out):
        tries = attempts[f"question {i}"]
        assert 1 <= len(tries) <= 3  # bounded: the first attempt and at most 2 retries
        assert (completion.error is None) == tries[-1].answered  # failed exactly when no attempt was answered
        assert all(not r.answered for r in tries[:-1])  # no retry after an answer
    assert 0 < sum(c.error is not None for c in out) < 60 and sum(len(t) for t in attempts.values()) == len(log)


def test_fault_draws_depend_on_the_request_and_its_attempt_only() -> None:
    rates = FaultRates(server_error=0.3, reset=0.3, seed=3)
    draws = [rates.draw(f"key {i}", attempt) for i in range(400) for attempt in range(2)]
    assert draws == [rates.draw(f"key {i}", attempt) for i in range(400) for attempt in range(2)]
    assert abs(draws.count("server_error") / 800 - 0.3) < 0.06 and abs(draws.count(None) / 800 - 0.4) < 0.06
    with pytest.raises(ValueError, match="sum to at most 1"):
        FaultRates(server_error=0.7, reset=0.5)


class RateLimited(Exception):
    def __init__(self, headers: dict[str, str]) -> None:
        self.status_code, self.litellm_response_headers = 429, headers


def test_retry_waits_at_least_what_retry_after_asks() -> None:
    assert _retry_after(RateLimited({"retry-after-ms": "2500", "retry-after": "3"})) == 2.5
    assert _retry_after(RateLimited({"retry-after": "4"})) == 4.0
    assert _retry_after(RateLimited({"retry-after": "Wed, 21 Oct 2026 07:28:00 GMT"})) == 0.0  # a date: our backoff
    assert _retry_after(ValueError("no headers")) == 0.0
    model = LiteLLMModel("openai/x", api_key="k", backoff=0.01)
    assert model._retry_delay(0, RateLimited({"retry-after": "2"})) == 2.0
    assert model._retry_delay(0, RateLimited({"retry-after": "3600"})) == 60.0  # capped at a minute
    assert 0.005 <= model._retry_delay(0, ValueError()) <= 0.01  # no Retry-After: jittered backoff


def test_each_answer_is_reported_as_it_arrives() -> None:
    with OpenAIServer() as srv:
        model = model_for(srv)
        seen: list[tuple[int, str]] = []
        out = model.generate([req(f"q {i}") for i in range(10)], on_result=lambda i, c: seen.append((i, c.text)))
    assert model.capabilities.streams_results
    assert sorted(seen) == [(i, f"q {i}") for i in range(10)] and [c.text for c in out] == [t for _, t in sorted(seen)]


def test_usage_cost_and_parameters() -> None:
    with OpenAIServer(lambda messages, params: "one two three") as srv:
        model = model_for(srv)
        out = model.generate(
            [req("four words of prompt", max_tokens=7), req("x", temperature=0.7, sample=3, max_tokens=5)]
        )
    assert (out[0].prompt_tokens, out[0].completion_tokens, out[0].cost) == (4, 3, 0.0)
    greedy, sampled = (r.body for r in sorted(srv.requests, key=lambda r: r.body["max_tokens"], reverse=True))
    assert greedy["model"] == "test-model" and greedy["max_tokens"] == 7 and "seed" not in greedy
    assert sampled["seed"] == 3 and sampled["temperature"] == 0.7
    assert model.name == "litellm:openai/test-model"
    assert "sk-test" not in repr(model)
    assert model.capabilities.score is False


def test_known_model_has_a_cost_and_context() -> None:
    with OpenAIServer(lambda messages, params: "one two three") as srv:
        model = model_for(srv, "litellm:openai/gpt-4o-mini")
        (out,) = model.generate([req("a prompt")])
    assert out.error is None and out.cost > 0.0
    assert model.capabilities.max_context


def test_stop_strings_are_honored() -> None:
    with OpenAIServer(lambda messages, params: "positive. Because it is great") as srv:
        out = model_for(srv).generate([req("x", stop=(".",)), req("x", stop=("is", "Because")), req("x")])
    assert [c.text for c in out] == ["positive", "positive. ", "positive. Because it is great"]
    assert sorted(tuple(r.body.get("stop", ())) for r in srv.requests) == [(), (".",), ("is", "Because")]


def test_unversioned_path_and_max_tokens() -> None:
    with OpenAIServer() as srv:
        (out,) = model_for(srv, api_base=srv.base_url).generate([req("a b c d e", max_tokens=2)])
    assert out.text == "a b" and out.completion_tokens == 2
    assert srv.requests[0].path == "/chat/completions"


def test_generate_inside_a_running_event_loop() -> None:
    with OpenAIServer() as srv:
        model = model_for(srv)

        async def main() -> list[str]:
            return [c.text for c in model.generate([req("from a notebook")])]

        assert asyncio.run(main()) == ["from a notebook"]


def test_score_is_not_supported() -> None:
    with OpenAIServer() as srv, pytest.raises(NotImplementedError, match="cannot score"):
        model_for(srv).score([])


def test_specs_and_options_are_checked_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ConfigError, match="set OPENAI_API_KEY or pass api_key="):
        get_model("litellm:openai/test-model", api_base="http://127.0.0.1:9/v1")
    assert get_model("litellm:hosted_vllm/m", api_base="http://127.0.0.1:9/v1").name == "litellm:hosted_vllm/m"
    with pytest.raises(ConfigError, match=r"litellm:test-model.*<provider>/<model>"):
        get_model("litellm:test-model")
    with pytest.raises(ConfigError, match="extra may not set seed"):
        get_model("litellm:openai/test-model", extra={"seed": 1})
    with pytest.raises(ConfigError, match="max_concurrency"):
        get_model("litellm:openai/test-model", max_concurrency=0)


def test_server_command_line() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "promptopt.testing.openai_server", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = next(word for word in proc.stdout.readline().split() if word.startswith("http://"))
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "ping"}]}).encode()
        request = urllib.request.Request(url + "/chat/completions", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            answer = json.load(response)
        assert answer["choices"][0]["message"]["content"] == "ping"
        assert answer["usage"] == {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
    finally:
        proc.terminate()
        proc.wait(timeout=5)


@pytest.mark.skipif(not (SRC / "promptopt" / "__init__.py").exists(), reason="promptopt/__init__.py not written yet")
def test_importing_promptopt_does_not_import_litellm() -> None:
    code = "import promptopt, sys; assert 'litellm' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=60)


# -- rate limits (token buckets) ----------------------------------------------------------------------------
class FakeClock:
    """Simulated time: sleeping advances it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_token_bucket_paces_to_its_rate() -> None:
    from promptopt.models.endpoints import TokenBucket

    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock, sleep=clock.sleep)  # 1 per second, holds 1
    assert bucket.capacity == 1.0

    async def take(n: int) -> None:
        for _ in range(n):
            await bucket.acquire()

    asyncio.run(take(5))
    assert clock.now == pytest.approx(4.0)  # the first at once, then one per second
    tokens = TokenBucket(600, capacity=100, clock=clock, sleep=clock.sleep)  # 10 tokens/s
    start = clock.now
    asyncio.run(tokens.acquire(250))  # more than the capacity: waits for a full bucket, leaves a debt
    assert clock.now == pytest.approx(start)
    asyncio.run(tokens.acquire(10))
    assert clock.now - start == pytest.approx(16.0)  # (150 debt + 10) / 10 per second
    tokens.adjust(+1000)  # usage came back lower than the estimate: never above the capacity
    start = clock.now
    asyncio.run(tokens.acquire(100))
    assert clock.now == pytest.approx(start)


def test_rpm_limit_is_shared_by_instances_of_one_model(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIServer() as srv:
        a = model_for(srv, spec="litellm:openai/rate-limited-model", rpm=480)  # 8 per second, 8 at once
        b = model_for(srv, spec="litellm:openai/rate-limited-model", rpm=480)
        bucket = a._pool.endpoints[0].rpm
        assert bucket is not None and bucket is b._pool.endpoints[0].rpm
        clock = FakeClock()  # the shared bucket waits in simulated time
        monkeypatch.setattr(bucket, "_clock", clock)
        monkeypatch.setattr(bucket, "_sleep", clock.sleep)
        bucket._stamp = clock()
        out = a.generate([req(f"q {i}") for i in range(15)]) + b.generate([req(f"r {i}") for i in range(15)])
    assert all(c.error is None for c in out)
    assert clock.now == 2.75  # 30 requests: 8 at once, then 22 more at 8 per second (exact in binary)


def test_tpm_limit_corrects_its_estimate_with_reported_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    with OpenAIServer() as srv:
        model = model_for(srv, spec="litellm:openai/tpm-model", tpm=6000)
        bucket = model._pool.endpoints[0].tpm
        assert bucket is not None and bucket.capacity == 100
        taken, returned = [], []
        acquire, adjust = bucket.acquire, bucket.adjust

        async def spy_acquire(amount: float = 1.0) -> None:
            taken.append(amount)
            await acquire(amount)

        def spy_adjust(amount: float) -> None:
            returned.append(amount)
            adjust(amount)

        monkeypatch.setattr(bucket, "acquire", spy_acquire)
        monkeypatch.setattr(bucket, "adjust", spy_adjust)
        (out,) = model.generate([req("hello there", max_tokens=50)])
    assert out.error is None
    used = out.prompt_tokens + out.completion_tokens
    assert taken == [len("hello there") // 4 + 50]  # the estimate is charged before sending
    assert returned == [taken[0] - used] and used > 0  # and corrected with the reported usage


def test_bad_rate_limits() -> None:
    with pytest.raises(ConfigError, match="rpm"):
        LiteLLMModel("openai/x", api_key="k", rpm=0)
    with pytest.raises(ConfigError, match="tpm"):
        LiteLLMModel("openai/x", api_key="k", tpm=-5)
