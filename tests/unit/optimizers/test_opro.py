"""OPRO on the toy task with a scripted proposer: the meta-prompt lists scored instructions in ascending
order with train problems in the task's template, <INS> replies are parsed, the optimum is found."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from meta_family_support import history_rows, run, scripted_editor

from promptopt.optimizers import OPROOptimizer
from promptopt.testing import TOY_BEST_INSTRUCTION, TOY_PARTIAL_INSTRUCTION, TOY_SEED_INSTRUCTION

FAST: dict[str, Any] = {"minibatch_size": 6}


def test_finds_the_known_better_instruction() -> None:
    result = run(OPROOptimizer(**FAST), budget=300)
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION
    assert result.best_dev["mean"] == 1.0 and result.usage["total"]["calls"] <= 300


def test_meta_prompt_lists_scores_ascending_and_problems_in_the_template(tmp_path: Path) -> None:
    proposer = scripted_editor(ramble_every=0)
    run(OPROOptimizer(n_samples=3, n_exemplars=2, **FAST), proposer=proposer, budget=300, run_dir=tmp_path / "run")
    metas = [r.messages[-1].content for r in proposer.requests]
    assert len(metas) % 3 == 0 and metas[0] == metas[1] == metas[2]  # n_samples replies from one meta-prompt
    later = metas[-1]
    listed = re.findall(r"text:\n(.+)\nscore:\n(\d+)", later)
    assert [t for t, _ in listed] == [TOY_SEED_INSTRUCTION, TOY_PARTIAL_INSTRUCTION]
    scores = [int(s) for _, s in listed]
    assert scores == sorted(scores) and all(0 <= s <= 100 for s in scores)
    full = {r["prompt"]["instruction"]: r["summary"]["mean"] for r in history_rows(tmp_path / "run") if r["full"]}
    assert scores == [round(100 * full[t]) for t, _ in listed]
    problems = re.findall(r"Problem:\n<INS>\n\nWord: (\w+)\nAnswer:\n\nGround truth answer:\n(\w+)", later)
    assert len(problems) == 2 and all(answer == word[::-1] for word, answer in problems)
    assert "The instruction should begin with <INS> and end with </INS>." in later


def test_children_record_the_best_so_far_as_parent(tmp_path: Path) -> None:
    run(OPROOptimizer(**FAST), budget=300, run_dir=tmp_path / "run")
    rows = history_rows(tmp_path / "run")
    full = {r["prompt"]["instruction"]: r["prompt"] for r in rows if r["full"]}
    best, partial = full[TOY_BEST_INSTRUCTION], full[TOY_PARTIAL_INSTRUCTION]
    assert best["origin"] == "opro" and best["parents"] == [partial["id"]]
    assert set(best["meta"]["shown"]) == {partial["id"], rows[0]["prompt"]["id"]}


def test_same_seed_same_result(tmp_path: Path) -> None:
    run(OPROOptimizer(**FAST), budget=150, seed=7, run_dir=tmp_path / "a")
    run(OPROOptimizer(**FAST), budget=150, seed=7, run_dir=tmp_path / "b")
    assert history_rows(tmp_path / "a") == history_rows(tmp_path / "b")
