"""API failures are not scores: a run whose failed model calls exceed ``max_errors`` stops (exit 1, one line naming
the last error and the endpoint), an evaluation where every call failed never prints a score, and a stopped run
resumes without paying its finished calls again."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.unit.cli.test_cli import TASK_YAML, run, write_task

import promptopt
from promptopt.core.exceptions import ConfigError, TooManyErrors
from promptopt.models.base import GenerationRequest, ScoreRequest
from promptopt.models.budget import MIN_CALLS_FOR_SHARE, BudgetTracker, ErrorLimit
from promptopt.models.fake import FakeModel, last_user
from promptopt.testing.openai_server import OpenAIServer

needs_litellm = pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")
ROWS = [{"word": f"w{i}", "answer": f"w{i}"} for i in range(40)]
TEST_20 = TASK_YAML.replace("test: 4", "test: 20")


# -- the limit ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "limit"),
    [
        (0.2, ErrorLimit(share=0.2)),
        ("20%", ErrorLimit(share=0.2)),
        ("0.5", ErrorLimit(share=0.5)),
        (5, ErrorLimit(share=None, count=5)),
        ("0", ErrorLimit(share=None, count=0)),
        (None, ErrorLimit(share=None)),
        ("none", ErrorLimit(share=None)),
    ],
)
def test_limit_forms(value: object, limit: ErrorLimit) -> None:
    assert ErrorLimit.of(value) == limit  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["lots", "150%", 1.5, -1, True])
def test_bad_limits_name_the_field(value: object) -> None:
    with pytest.raises(ConfigError, match="max_errors"):
        ErrorLimit.of(value)  # type: ignore[arg-type]


def test_share_waits_for_enough_calls_and_count_does_not() -> None:
    share = ErrorLimit.of("20%")
    assert not share.exceeded(errors=MIN_CALLS_FOR_SHARE - 1, calls=MIN_CALLS_FOR_SHARE - 1)
    assert share.exceeded(errors=3, calls=MIN_CALLS_FOR_SHARE)
    assert not share.exceeded(errors=2, calls=MIN_CALLS_FOR_SHARE)  # 20% is allowed, more is not
    assert ErrorLimit.of(0).exceeded(errors=1, calls=1)
    assert not ErrorLimit.of(None).exceeded(errors=100, calls=100)


def test_a_resumed_run_counts_failures_afresh(tmp_path: Path) -> None:
    """Failures before an interruption do not stop the resumed run (the endpoint may be back)."""
    from promptopt.models.budget import Usage

    tracker = BudgetTracker(path=tmp_path / "usage.json", max_errors=ErrorLimit.of("20%"))
    tracker.charge("task", Usage(calls=50, errors=50))
    resumed = BudgetTracker(max_errors=ErrorLimit.of("20%"))
    resumed.restore(tmp_path / "usage.json")
    assert resumed.total.errors == 50  # still accounted
    resumed.count_failures(10, 1, "boom", model="model m")  # 1 of 10 in this process: fine
    with pytest.raises(TooManyErrors, match=r"3 of 12 model calls failed.*boom \[model m\]"):
        resumed.count_failures(2, 2, "boom", model="model m")


def test_a_prompt_too_long_for_the_model_is_not_an_outage(tmp_path: Path) -> None:
    """A candidate whose requests overflow the context fails the same way every time: its examples are scored as
    failed, the run goes on."""
    task = toy(tmp_path)
    long_words = split_words(task)[:10]

    def fail(request: GenerationRequest | ScoreRequest) -> str | None:
        too_long = word(last_user(request.messages)) in long_words
        return "ValueError: the prompt has 300 tokens; the context holds 128" if too_long else None

    result = promptopt.evaluate(task, FakeModel(name="fake:echo", fail=fail), split="test", cache=False)
    assert result.n_api_errors == 10


# -- the API, on the fake model ------------------------------------------------------------------------------
def word(text: str) -> str:
    """The toy example's word: the last line of the user message (the template is instruction, then word)."""
    return text.split()[-1]


def failing(when: Callable[[str], bool]) -> FakeModel:
    """An echo model whose calls fail (after retries, as a backend reports it) when ``when(the example's word)``."""

    def fail(request: GenerationRequest | ScoreRequest) -> str | None:
        return "APIConnectionError: connection refused" if when(word(last_user(request.messages))) else None

    return FakeModel(name="fake:echo", fail=fail)


def toy(tmp: Path) -> Path:
    """The toy task with 20 test examples."""
    return write_task(tmp / "toy", yaml_text=TEST_20, rows=ROWS)


def split_words(task: Path) -> list[str]:
    return [ex.inputs["word"] for ex in promptopt.load_task(task).test]


def test_evaluate_stops_when_too_many_calls_fail(tmp_path: Path) -> None:
    task = toy(tmp_path)
    model = failing(lambda w: w in split_words(task)[:8])
    with pytest.raises(TooManyErrors) as info:
        promptopt.evaluate(task, model, split="test", cache=False)
    message = str(info.value)
    assert "of 20 model calls failed" in message and "max_errors=20%" in message
    assert "APIConnectionError: connection refused" in message and "fake:echo" in message
    assert "\n" not in message
    result = promptopt.evaluate(task, model, split="test", cache=False, max_errors="50%")
    assert result.n_api_errors == 8 and result.n == 20


def test_few_failures_are_reported_with_the_score(tmp_path: Path) -> None:
    task = toy(tmp_path)
    result = promptopt.evaluate(task, failing(lambda w: w == split_words(task)[0]), split="test", cache=False)
    assert result.n_api_errors == 1 and "1 API errors" in result.format()


def test_all_failed_is_never_a_score_even_without_a_limit(tmp_path: Path) -> None:
    """4 calls are too few for the share to apply, and max_errors=None turns it off: all failed still stops."""
    for max_errors in ("20%", None):
        with pytest.raises(TooManyErrors, match="all 4 examples of the dev evaluation failed"):
            promptopt.evaluate(toy(tmp_path), failing(lambda w: True), cache=False, max_errors=max_errors)


def test_optimize_stops_resumes_and_pays_finished_calls_once(tmp_path: Path) -> None:
    """The endpoint goes down during the test evaluation; after it is back, --resume finishes the run and every
    request that was answered before is answered from the cache."""
    task, run_dir, cache = toy(tmp_path), tmp_path / "run", tmp_path / "cache.sqlite"
    down, words = {"on": True}, set(split_words(task))
    model = failing(lambda w: down["on"] and w in words)
    with pytest.raises(TooManyErrors, match="20 of 24 model calls failed"):
        promptopt.optimize(task, "baseline", model, run_dir=run_dir, cache=cache)
    assert not (run_dir / "result.json").exists()
    answered = {last_user(r.messages) for r in model.requests if word(last_user(r.messages)) not in words}
    down["on"] = False
    model.requests.clear()
    result = promptopt.resume(run_dir, model=model)
    assert result.best_test is not None and result.best_test["n"] == 20 and result.best_test["api_errors"] == 0
    again = {last_user(r.messages) for r in model.requests}
    assert len(answered) == 4 and not again & answered and {word(t) for t in again} == words


def test_optimize_refuses_a_seed_score_where_every_call_failed(tmp_path: Path) -> None:
    with pytest.raises(TooManyErrors, match="all 4 examples of the dev evaluation failed"):
        promptopt.optimize(toy(tmp_path), "baseline", failing(lambda w: True), cache=False, max_errors=None)


# -- the CLI against the real loopback OpenAI-compatible server ---------------------------------------------------
def model_args(base_url: str) -> list[str]:
    """The loopback model: one retry, a short backoff."""
    return [
        "--model", "litellm:openai/test-model", "--api-base", base_url + "/v1", "--model-opt", "api_key=sk-test",
        "--model-opt", "max_retries=1", "--model-opt", "backoff=0.01", "--model-opt", "timeout=5",
    ]  # fmt: skip


def evaluate_args(task: Path, base_url: str, *extra: str) -> list[str]:
    return ["evaluate", "--task", str(task), *model_args(base_url), "--no-cache", *extra]


def assert_outage(args: list[str], *needles: str) -> None:
    code, out, err = run(*args)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 1, err
    assert len(lines) == 1, err
    assert "accuracy" not in out and "exact_match" not in out and out.strip() == ""  # no score
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@needs_litellm
def test_cli_evaluate_against_a_dead_port(tmp_path: Path) -> None:
    srv = OpenAIServer()  # bound, then closed: nothing listens on its port
    base = srv.base_url
    srv.stop()
    args = evaluate_args(toy(tmp_path), base, "--split", "test")
    assert_outage(args, "20 of 20 model calls failed", "Connection error", base + "/v1", "--max-errors")


@needs_litellm
@pytest.mark.parametrize("quiet", [True, False])
def test_cli_evaluate_against_a_server_that_always_fails(tmp_path: Path, quiet: bool) -> None:
    with OpenAIServer(fault=lambda messages, params: 500) as srv:
        args = evaluate_args(toy(tmp_path), srv.base_url, "--split", "test", *(["-q"] if quiet else []))
        assert_outage(args, "model calls failed", "status 500", srv.base_url + "/v1")
        assert {r.status for r in srv.requests} == {500}


@needs_litellm
def test_cli_all_failed_small_evaluation_is_not_a_score(tmp_path: Path) -> None:
    with OpenAIServer(fault=lambda messages, params: 500) as srv:
        args = evaluate_args(toy(tmp_path), srv.base_url, "--split", "dev", "--max-errors", "none", "--json")
        assert_outage(args, "all 4 examples of the dev evaluation failed", "status 500", srv.base_url)


@needs_litellm
def test_cli_evaluate_reports_a_few_failures_with_the_score(tmp_path: Path) -> None:
    task = toy(tmp_path)
    first = split_words(task)[0]
    with OpenAIServer(fault=lambda messages, params: 500 if word(messages[-1]["content"]) == first else None) as srv:
        code, out, err = run(*evaluate_args(task, srv.base_url, "--split", "test", "-q", "--json"))
    assert code == 0, err
    payload = json.loads(out)
    assert payload["n"] == 20 and payload["api_errors"] == 1


@needs_litellm
def test_cli_optimize_stops_with_a_resume_hint_and_resumes(tmp_path: Path) -> None:
    task = toy(tmp_path)
    words = set(split_words(task))
    with OpenAIServer(fault=lambda messages, params: 500 if word(messages[-1]["content"]) in words else None) as srv:
        args = ["optimize", "--task", str(task), *model_args(srv.base_url), "--optimizer", "baseline", "-q"]
        code, _, err = run(*args, "--runs-dir", str(tmp_path / "runs"), "--cache", str(tmp_path / "c.sqlite"))
        assert code == 1, err
        (line,) = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert "20 of 24 model calls failed" in line and "--resume" in line
        run_dir = line.rsplit("--resume ", 1)[1].strip()
        answered = {r.body["messages"][-1]["content"] for r in srv.requests if r.status == 200}
        srv.fault = None
        n_before = len(srv.requests)
        code, out, err = run("optimize", "--resume", run_dir, *model_args(srv.base_url)[2:], "-q", "--json")
    assert code == 0, err
    assert json.loads(out)["best_test"]["api_errors"] == 0
    again = {r.body["messages"][-1]["content"] for r in srv.requests[n_before:]}
    assert len(answered) == 4 and {word(t) for t in again} == words and not again & answered
