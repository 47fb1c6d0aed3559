"""Task prompt vectors: arithmetic, the on-disk store and its refusals (the optimizer's ``tpv`` option is
tested in test_soft_prompt.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

import torch

from promptopt import ConfigError
from promptopt.models.vectors import TaskPromptVector, VectorStore


def vector(task: str, seed: int, *, base_model: str = "tiny", init_seed: int = 0) -> TaskPromptVector:
    g = torch.Generator().manual_seed(seed)
    return TaskPromptVector(torch.randn(4, 8, generator=g), base_model, "random", init_seed, {task: 1.0})


def test_arithmetic_round_trips() -> None:
    a, b = vector("a", 1), vector("b", 2)
    back = (a + b) - b
    torch.testing.assert_close(back.values, a.values)
    assert dict(back.tasks) == {"a": 1.0}  # b's coefficient cancels out
    torch.testing.assert_close((2 * a - a).values, a.values)
    assert dict((0.5 * a + 2.0 * b).tasks) == {"a": 0.5, "b": 2.0}
    assert not (a - a).values.any() and (a - a).label == "0"
    init = torch.randn(4, 8)
    tuned = a.apply(init)
    again = TaskPromptVector.from_prompts(tuned, init, task="a", base_model="tiny", init="random", init_seed=0)
    torch.testing.assert_close(again.values, a.values)


def test_store_round_trip_and_combination(tmp_path: Path) -> None:
    store = VectorStore(tmp_path)
    a, b = vector("sst2", 1), vector("trec", 2)
    store.put(a)
    store.put(b)
    store.put(vector("sst2", 3, init_seed=1))
    assert store.tasks(base_model="tiny") == ["sst2", "trec"]
    assert torch.equal(store.get("sst2", base_model="tiny").values, a.values)  # bit for bit
    combined = store.combine({"sst2": 1.0, "trec": -0.5}, base_model="tiny")
    torch.testing.assert_close(combined.values, a.values - 0.5 * b.values)
    assert combined.label == "1·sst2 + -0.5·trec"
    assert len(store.entries()) == 3


def test_wrong_base_model_is_refused(tmp_path: Path) -> None:
    store = VectorStore(tmp_path)
    store.put(vector("sst2", 1, base_model="smollm2"))
    with pytest.raises(ConfigError, match=r"stored for 'smollm2' \(random init, seed 0\) only"):
        store.get("sst2", base_model="hf:other")
    with pytest.raises(ConfigError, match=r"of 1·trec was made on 'hf:other'.*cannot be used on 'smollm2'"):
        vector("sst2", 1, base_model="smollm2") + vector("trec", 2, base_model="hf:other")
    with pytest.raises(ConfigError, match=r"seed 0.*seed 1"):
        vector("a", 1).check(base_model="tiny", init="random", init_seed=1, shape=(4, 8))
    with pytest.raises(ConfigError, match="seeded init"):
        TaskPromptVector(torch.zeros(4, 8), "tiny", "text", 0, {"a": 1.0})
