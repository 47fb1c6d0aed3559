"""In-Context Sampling and FormatSpread on the embedded SmolLM2 (bounded: 6 sst2 test examples)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from promptopt.core.taskfile import load_task
from promptopt.evaluation.evaluator import Evaluator
from promptopt.evaluation.spread import format_spread
from promptopt.models.budget import BudgetTracker
from promptopt.models.cache import ResponseCache
from promptopt.models.client import ModelClient
from promptopt.prompts.ics import make_ics_prompt

pytestmark = pytest.mark.integration


def test_ics_prompts_and_format_spread_on_smollm2(smollm2, tmp_path):
    task = load_task("sst2")
    test = task.test[:6]
    ev = Evaluator(task, ModelClient(smollm2, cache=ResponseCache(tmp_path / "c.sqlite"), budget=BudgetTracker()))
    for strategy in ("random", "similar"):
        vote = make_ics_prompt(task.seed_prompt(), task.train, k=3, shots=2, strategy=strategy, embedder="tfidf")
        res = ev.evaluate(vote, test, split="test")
        assert res.calls == 3 * len(test) and res.n_api_errors == 0
        assert all(r.prediction in task.labels and r.raw.count("|") == 2 for r in res.records)
        conf = make_ics_prompt(
            task.seed_prompt(), task.train, k=3, shots=2, strategy=strategy, aggregation="confidence", embedder="tfidf"
        )
        again = ev.evaluate(conf, test, split="test")
        assert again.calls == 0  # the same sub-prompts, answered from the cache
        for a, b in zip(res.records, again.records, strict=True):
            assert a.label_logprobs == pytest.approx(b.label_logprobs)
            if a.prediction != b.prediction:  # they only disagree when the vote goes against the summed probability
                assert b.prediction == task.labels[max(range(2), key=lambda i: b.label_logprobs[i])]
    spread = format_spread(ev, task.seed_prompt(), n_formats=3, examples=test)
    assert len(spread.results) == 3 and spread.min <= spread.median <= spread.max
    assert spread.results[0].mean == ev.evaluate(task.seed_prompt(), test, split="test").mean
