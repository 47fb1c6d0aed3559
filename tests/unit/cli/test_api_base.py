"""``--api-base`` given several times: one litellm model balanced over the endpoints (loopback servers)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from tests.unit.cli.test_cli import run, write_task

from promptopt.testing.openai_server import OpenAIServer

pytestmark = pytest.mark.skipif(importlib.util.find_spec("litellm") is None, reason="litellm not installed")


def test_repeated_api_base_spreads_an_evaluation_over_the_endpoints(tmp_path: Path) -> None:
    task = write_task(tmp_path / "toy")
    with OpenAIServer(latency=0.02) as a, OpenAIServer(fault=lambda m, p: 500) as dead, OpenAIServer(latency=0.02) as b:
        bases = [arg for s in (a, dead, b) for arg in ("--api-base", s.base_url + "/v1")]
        code, out, err = run(
            "evaluate", "--task", str(task), "--model", "litellm:openai/test-model", *bases, "--model-opt",
            "api_key=sk-test", "--model-opt", "backoff=0.01", "--model-opt", "allowed_fails=1", "--no-cache", "-q",
        )  # fmt: skip
    assert code == 0, err
    assert "model calls: 4" in out
    assert sum(r.answered for r in a.requests + b.requests) == 4 and not any(r.answered for r in dead.requests)
    assert len(dead.requests) <= 4
