"""APO/ProTeGi on the toy task with a scripted proposer: gradients feed the edits, paraphrases are
siblings of the edits, the optimum is found, runs are deterministic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from meta_family_support import ANALYSIS, history_rows, run, scripted_editor

from promptopt.optimizers import APOOptimizer
from promptopt.optimizers.presets import load_optimizer
from promptopt.testing import TOY_BEST_INSTRUCTION, TOY_PARTIAL_INSTRUCTION, TOY_SEED_INSTRUCTION

FAST: dict[str, Any] = {"minibatch_size": 6}


def test_finds_the_known_better_instruction() -> None:
    result = run(APOOptimizer(**FAST), budget=300)
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION
    assert result.best_dev["mean"] == 1.0 and result.usage["total"]["calls"] <= 300


def test_gradient_drives_the_edit_and_paraphrases_are_siblings(tmp_path: Path) -> None:
    proposer = scripted_editor(ramble_every=0)
    run(APOOptimizer(n_gradients=1, n_reasons=4, **FAST), proposer=proposer, budget=300, run_dir=tmp_path / "run")
    users = [r.messages[-1].content for r in proposer.requests]
    gradient_asks = [u for u in users if "Give 4 reasons why the prompt" in u]
    edit_asks = [u for u in users if "the problem with this prompt is that:" in u]
    assert gradient_asks and edit_asks
    assert all(f"the problem with this prompt is that:\n{ANALYSIS}" in u for u in edit_asks)
    assert all("Label: " in u and "Output: " in u for u in gradient_asks + edit_asks)  # failures shown
    rows = history_rows(tmp_path / "run")
    by_instruction = {r["prompt"]["instruction"]: r["prompt"] for r in rows}
    edit = by_instruction[TOY_PARTIAL_INSTRUCTION]
    assert edit["origin"] == "apo" and edit["meta"]["gradient"] == ANALYSIS and edit["meta"]["edit_words"] == 1
    para = by_instruction["Please reverse the word."]
    assert para["origin"] == "apo:paraphrase" and para["meta"]["paraphrase_of"] == edit["id"]
    assert para["parents"] == edit["parents"] == [rows[0]["prompt"]["id"]]  # both children of the seed
    assert rows[0]["prompt"]["instruction"] == TOY_SEED_INSTRUCTION


def test_without_paraphrases_only_edits(tmp_path: Path) -> None:
    run(APOOptimizer(n_paraphrases=0, **FAST), budget=300, run_dir=tmp_path / "run")
    origins = {r["prompt"]["origin"] for r in history_rows(tmp_path / "run")}
    assert origins == {"seed", "apo"}


def test_same_seed_same_result(tmp_path: Path) -> None:
    run(load_optimizer("apo", **FAST), budget=150, seed=5, run_dir=tmp_path / "a")
    run(load_optimizer("apo", **FAST), budget=150, seed=5, run_dir=tmp_path / "b")
    assert history_rows(tmp_path / "a") == history_rows(tmp_path / "b")
