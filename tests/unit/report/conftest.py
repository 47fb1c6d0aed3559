"""Run directories of fake-model runs for the report tests (made once per module: the reports only read them)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from report_fixtures import HOSTILE, PROPOSALS

import promptopt
from promptopt.optimizers.presets import load_optimizer
from promptopt.testing import toy_model, write_toy_task


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An ape run on the toy task (a task directory, so the report can load a dev example) that screens on dev
    minibatches of 4 before confirming on the full dev split; its best prompt is :data:`HOSTILE`."""
    root = tmp_path_factory.mktemp("report_run")
    task = write_toy_task(root / "task", n_train=6, n_dev=16, n_test=10)
    out = root / "run"
    result = promptopt.optimize(
        str(task), load_optimizer("ape", minibatch_size=4), toy_model(PROPOSALS), cache=False, run_dir=out
    )
    assert result.best_prompt.instruction == HOSTILE
    return out


@pytest.fixture(scope="module")
def compare_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compare directory as promptopt compare writes it (compare.json listing its runs; no leaderboard yet): ape
    and opro, two seeds of ape."""
    root = tmp_path_factory.mktemp("report_compare")
    task = write_toy_task(root / "task", n_train=6, n_dev=16, n_test=10)
    runs = []
    for optimizer, seed in (("ape", 0), ("ape", 1), ("opro", 0)):
        run_dir = f"runs/{optimizer}-seed{seed}"
        promptopt.optimize(str(task), optimizer, toy_model(PROPOSALS), seed=seed, cache=False, run_dir=root / run_dir)
        runs.append({"optimizer": optimizer, "seed": seed, "run_dir": run_dir, "status": "finished"})
    runs.append({"optimizer": "opro", "seed": 1, "run_dir": "runs/opro-seed1", "status": "pending"})
    spec = {
        "format": "promptopt.compare/1",
        "settings": {"task": str(task), "optimizers": ["ape", "opro"], "model": "fake:toy", "budget": {}},
        "runs": runs,
        "leaderboard": None,
    }
    (root / "compare.json").write_text(json.dumps(spec))
    return root
