"""The embedded model gives the same predictions through every HFModel path: shared-prefix KV cache
(packed label scoring, batched generation; the default), batches without a shared prefix, and one request
at a time. Bounded: ~30 s of CPU."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from promptopt.core.taskfile import load_task
from promptopt.models.base import GenerationRequest, ScoreRequest

pytestmark = pytest.mark.integration
TASKS = Path(__file__).resolve().parents[2] / "tasks"


@contextmanager
def path(model: Any, *, batch_size: int, min_prefix: int) -> Iterator[None]:
    saved = model.batch_size, model.min_prefix
    model.batch_size, model.min_prefix = batch_size, min_prefix
    model.clear_prefix_cache()
    try:
        yield
    finally:
        model.batch_size, model.min_prefix = saved


def three_ways(model: Any, run: Callable[[], list]) -> tuple[list, list, list]:
    with path(model, batch_size=32, min_prefix=16):
        cached = run()
        assert model._prefixes, "the shared prefix was not used"
    with path(model, batch_size=32, min_prefix=0):
        batched = run()
    with path(model, batch_size=1, min_prefix=0):
        single = run()
    return cached, batched, single


def test_label_scores_agree_across_paths(smollm2: Any) -> None:
    task = load_task(TASKS / "sst2")
    prompt = dataclasses.replace(task.seed_prompt(), demos=tuple(task.train[:2]))
    requests = [ScoreRequest(messages=prompt.render(ex), continuations=task.labels) for ex in task.test[:6]]
    cached, batched, single = three_ways(smollm2, lambda: smollm2.score(requests))
    for a, b, c in zip(cached, batched, single, strict=True):
        assert a.error is None and b.error is None and c.error is None
        assert a.logprobs == pytest.approx(c.logprobs, abs=1e-3)
        assert b.logprobs == pytest.approx(c.logprobs, abs=1e-3)
        best = [max(range(len(x.logprobs)), key=x.logprobs.__getitem__) for x in (a, b, c)]
        assert best[0] == best[1] == best[2]


def test_greedy_generations_agree_across_paths(smollm2: Any) -> None:
    task = load_task(TASKS / "ii_antonyms")
    prompt = dataclasses.replace(task.seed_prompt(), demos=tuple(task.train[:2]))
    requests = [
        GenerationRequest(messages=prompt.render(ex), max_tokens=6, stop=task.generation.stop) for ex in task.test[:4]
    ]
    cached, batched, single = three_ways(smollm2, lambda: smollm2.generate(requests))
    assert [c.text for c in cached] == [c.text for c in batched] == [c.text for c in single]
    assert all(c.error is None for c in cached)
