"""PE2 on the toy task with a scripted proposer: finds the known optimum, respects the step size,
records lineage and edits, is deterministic, and each component switch changes the meta-prompt."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from meta_family_support import ANALYSIS, RAMBLE, history_rows, run, scripted_editor

from promptopt.core.exceptions import ConfigError
from promptopt.models.base import GenerationRequest
from promptopt.models.fake import FakeModel, last_user
from promptopt.optimizers import PE2Optimizer
from promptopt.optimizers.presets import load_optimizer
from promptopt.optimizers.screening import extract_instruction, word_edit_distance
from promptopt.testing import TOY_BEST_INSTRUCTION, TOY_PARTIAL_INSTRUCTION, TOY_SEED_INSTRUCTION

FAST: dict[str, Any] = {"minibatch_size": 6}


def test_finds_the_known_better_instruction(tmp_path: Path) -> None:
    result = run(PE2Optimizer(**FAST), budget=300, run_dir=tmp_path / "run")
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION
    assert result.best_dev["mean"] == 1.0 and result.best_test is not None and result.best_test["mean"] == 1.0
    assert result.baseline_dev["mean"] < 0.5
    assert result.stop_reason == "a prompt scored 1.0 on dev"
    assert result.usage["total"]["calls"] <= 300
    assert result.rejected.get("duplicate", 0) > 0  # the editor repeats itself; repeats are never evaluated


def test_step_size_is_enforced_and_measured(tmp_path: Path) -> None:
    result = run(PE2Optimizer(step_size=4, **FAST), budget=300, run_dir=tmp_path / "run")
    rows = history_rows(tmp_path / "run")
    instructions = {r["prompt"]["id"]: r["prompt"]["instruction"] for r in rows}
    children = [r for r in rows if r["prompt"]["origin"] == "pe2"]
    assert children
    for r in children:
        parent = instructions[r["prompt"]["parents"][0]]
        measured = word_edit_distance(parent, r["prompt"]["instruction"])
        assert r["prompt"]["meta"]["edit_words"] == measured <= 4
    assert RAMBLE not in instructions.values()
    assert result.rejected["step_size"] > 0
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION  # the 1- and 4-word edits fit


def test_without_step_size_large_edits_are_evaluated_and_measured(tmp_path: Path) -> None:
    run(PE2Optimizer(**FAST), budget=300, run_dir=tmp_path / "run")
    rambles = [r for r in history_rows(tmp_path / "run") if r["prompt"]["instruction"] == RAMBLE]
    assert rambles
    assert all(r["prompt"]["meta"]["edit_words"] == word_edit_distance(TOY_SEED_INSTRUCTION, RAMBLE) for r in rambles)


def test_history_records_parents_edits_and_scores(tmp_path: Path) -> None:
    run(PE2Optimizer(**FAST), budget=300, run_dir=tmp_path / "run")
    rows = history_rows(tmp_path / "run")
    ids = {r["prompt"]["id"] for r in rows}
    seed = rows[0]
    assert seed["prompt"]["instruction"] == TOY_SEED_INSTRUCTION and seed["full"]
    full = {r["prompt"]["instruction"]: r for r in rows if r["full"]}
    partial, best = full[TOY_PARTIAL_INSTRUCTION], full[TOY_BEST_INSTRUCTION]
    assert partial["prompt"]["parents"] == [seed["prompt"]["id"]]
    assert best["prompt"]["parents"] == [partial["prompt"]["id"]]  # lineage: seed → partial → best
    for child in (partial, best):
        meta = child["prompt"]["meta"]
        assert child["prompt"]["parents"][0] in ids
        assert meta["reasoning"] == ANALYSIS and len(meta["failures"]) == 2 and meta["round"] >= 1
    assert partial["prompt"]["meta"]["edit_words"] == 1 and best["prompt"]["meta"]["edit_words"] == 4
    assert seed["summary"]["mean"] < partial["summary"]["mean"] < best["summary"]["mean"] == 1.0
    # every child was raced on a dev minibatch before its full-dev evaluation
    raced = {r["prompt"]["id"] for r in rows if not r["full"] and r["summary"]["n"] == 6}
    assert partial["prompt"]["id"] in raced and best["prompt"]["id"] in raced
    # failures come from each parent's run on a train batch (8 train examples in the toy task)
    train_runs = [r for r in rows if not r["full"] and r["summary"]["n"] == 8]
    assert [r["prompt"]["id"] for r in train_runs] == [seed["prompt"]["id"], partial["prompt"]["id"]]


def test_failures_from_dev_skip_the_train_runs(tmp_path: Path) -> None:
    result = run(PE2Optimizer(failure_split="dev", **FAST), budget=300, run_dir=tmp_path / "run")
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION
    assert all(r["full"] or r["summary"]["n"] == 6 for r in history_rows(tmp_path / "run"))


def test_same_seed_same_result(tmp_path: Path) -> None:
    a = run(PE2Optimizer(**FAST), budget=150, seed=3, run_dir=tmp_path / "a")
    b = run(PE2Optimizer(**FAST), budget=150, seed=3, run_dir=tmp_path / "b")
    assert history_rows(tmp_path / "a") == history_rows(tmp_path / "b")
    assert a.best_prompt.to_dict() == b.best_prompt.to_dict() and a.rejected == b.rejected


def _step2_messages(preset: str) -> list[str]:
    """Messages of the last Step-2 request on the step-2 parent 'Reverse the word.' of a PE2 run with ``preset``."""
    proposer = scripted_editor(ramble_every=0)
    run(load_optimizer(preset, n_steps=2, **FAST), proposer=proposer, budget=300)
    needle = f"## Current Prompt\n{TOY_PARTIAL_INSTRUCTION}"
    step2 = [r for r in proposer.requests if needle in r.messages[-1].content]
    assert step2
    return [m.content for m in step2[-1].messages]


PE2_SECTIONS = {
    "task_description": "## Step 1\nI will provide you with the current prompt",
    "context": "## Full Template",
    "reasoning_template": "Is the prompt correctly describing the task shown by the input-label pair",
    "momentum": "## Prompt Refinement History from the Past",
}


@pytest.mark.parametrize(
    ("preset", "removed"),
    [
        ("pe2", None),
        ("pe2-no-task-description", "task_description"),
        ("pe2-no-context", "context"),
        ("pe2-no-reasoning", "reasoning_template"),
        ("pe2-no-momentum", "momentum"),
    ],
)
def test_ablation_presets_change_the_meta_prompt(preset: str, removed: str | None) -> None:
    text = "\n".join(_step2_messages(preset))
    for component, needle in PE2_SECTIONS.items():
        assert (needle in text) == (component != removed), (preset, component)
    if removed != "context":
        assert "```\nReverse the word.\n\nWord: <word>\nAnswer:\n```" in text  # the full template
    if removed != "momentum":  # the lineage of the step-2 parent, with dev scores
        assert f'edited from "{TOY_SEED_INSTRUCTION}" to "{TOY_PARTIAL_INSTRUCTION}" (1 words changed)' in text
        assert "The accuracy of the current prompt on the dev set is" in text
    assert "Label: " in text and ANALYSIS in text  # failures and the Step-1 analysis are always there


def test_ablation_presets_differ_from_pe2_in_one_setting() -> None:
    base = load_optimizer("pe2").to_config()
    assert base == PE2Optimizer().to_config()  # the preset spells out the defaults the ablations start from
    ablations: list[tuple[str, dict[str, Any]]] = [
        ("pe2-no-task-description", {"task_description": False}),
        ("pe2-no-context", {"context": False}),
        ("pe2-no-reasoning", {"reasoning_template": False}),
        ("pe2-no-momentum", {"momentum": False}),
        ("pe2-step-size", {"step_size": 10}),
        ("pe2-compact", {"meta_prompt": "compact"}),
    ]
    for preset, changed in ablations:
        assert load_optimizer(preset).to_config() == {**base, **changed}, preset


def test_step_size_is_stated_in_the_meta_prompt() -> None:
    text = "\n".join(_step2_messages("pe2-step-size"))
    assert "You are allowed to change up to 10 words in the original prompt." in text


# -- the compact meta-prompt (meta_prompt="compact", preset pe2-compact) -----------------------------------
CHATTY_PREAMBLE = "Step 1 shows the model misread the task.\n\nNew instruction:\n"


def compact_editor() -> FakeModel:
    """The scripted editor answering the compact meta-prompt the way SmolLM2-135M tends to: a Step-1 analysis,
    then (for Step 2) a preamble before repeating the answer cue and writing the new instruction."""
    editor = scripted_editor()

    def fn(request: GenerationRequest) -> str:
        user = last_user(request.messages)
        if "New instruction:" not in user:
            return ANALYSIS
        reply = editor.generate([request])[0].text
        return reply if reply == RAMBLE else CHATTY_PREAMBLE + reply.removeprefix("The new prompt is: ")

    return FakeModel(fn=fn, name="fake:compact-editor")


def _compact_requests(**config: Any) -> list[list[tuple[str, str]]]:
    proposer = compact_editor()
    run(PE2Optimizer(meta_prompt="compact", n_steps=2, **FAST, **config), proposer=proposer, budget=300)
    return [[(m.role, m.content) for m in r.messages] for r in proposer.requests]


def test_compact_finds_the_optimum_through_a_chatty_preamble(tmp_path: Path) -> None:
    result = run(PE2Optimizer(meta_prompt="compact", **FAST), proposer=compact_editor(), run_dir=tmp_path / "run")
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION and result.best_dev["mean"] == 1.0
    assert "chatter" not in result.rejected  # the text after the last answer cue, not the preamble
    full = {r["prompt"]["instruction"]: r for r in history_rows(tmp_path / "run") if r["full"]}
    assert full[TOY_PARTIAL_INSTRUCTION]["prompt"]["meta"]["reasoning"] == ANALYSIS


def test_the_answer_cue_is_only_used_when_given() -> None:
    reply = CHATTY_PREAMBLE + '"Reverse the word."\n\nThis tells the model what to do.'
    assert extract_instruction(reply, cue="New instruction:").instruction == "Reverse the word."
    assert extract_instruction(reply).instruction == "Step 1 shows the model misread the task."
    assert extract_instruction("New instruction:", cue="New instruction:").reason == "empty"
    reply = 'New instruction:\n"""\nReverse the word.\nCorrect answer: drow'
    assert extract_instruction(reply, cue="New instruction:").instruction == "Reverse the word."


def test_compact_meta_prompt_is_one_short_turn_per_step_with_every_component() -> None:
    requests = _compact_requests()
    assert all([role for role, _ in r] == ["system", "user"] for r in requests)  # no assistant turns
    step1 = [r[-1][1] for r in requests if "New instruction:" not in r[-1][1]]
    step2 = [r[-1][1] for r in requests if "New instruction:" in r[-1][1]]
    assert step1 and step2 and len(step1) == len(step2)
    for text in step1:
        assert "Does the instruction describe the task?" in text and "Step 2:" in text  # reasoning, two steps
        assert '\n\nWord: <word>\nAnswer:\n"""' in text  # the full template
        assert "Model output: " in text and "Correct output: " in text
        assert len(text.split()) < 150  # vs ~500 words for the paper's two turns
    last = next(t for t in step2 if t.endswith(f"Current instruction: {TOY_PARTIAL_INSTRUCTION}\nNew instruction:"))
    assert f"Analysis: {ANALYSIS}" in last
    assert re.search(rf'"{TOY_SEED_INSTRUCTION}" -> "{TOY_PARTIAL_INSTRUCTION}": 0\.\d\d -> 0\.\d\d', last)  # momentum


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ({"task_description": False}, "Step 2: write a better instruction."),
        ({"context": False}, "The model sees the instruction inside this template:"),
        ({"reasoning_template": False}, "Does the instruction describe the task?"),
        ({"momentum": False}, "Dev accuracy of earlier edits"),
    ],
)
def test_compact_switches_drop_their_component(setting: dict[str, Any], needle: str) -> None:
    assert any(needle in c for r in _compact_requests() for _, c in r)
    assert not any(needle in c for r in _compact_requests(**setting) for _, c in r)


def test_compact_states_the_step_size() -> None:
    texts = [c for r in _compact_requests(step_size=4) for _, c in r]
    assert any("Change at most 4 words." in t for t in texts)


def test_meta_prompt_setting_is_validated() -> None:
    with pytest.raises(ConfigError, match="meta_prompt"):
        PE2Optimizer(meta_prompt="short")
