"""The machinery pe2/apo/opro share (proposer.py, screening.py, beam.py): proposal screening, extraction,
rendering, beam and racing; presets; resume by replay; the CLI; record/replay cassettes (including a golden
session recorded with the embedded SmolLM2 proposer)."""

from __future__ import annotations

import json
import logging
import os
import random
from pathlib import Path
from typing import Any

import pytest
from meta_family_support import history_rows, run, scripted_editor
from typer.testing import CliRunner

import promptopt
from promptopt.cli.app import app
from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError
from promptopt.core.messages import Message
from promptopt.evaluation.evaluator import EvalResult, ExampleRecord
from promptopt.models.base import GenerationRequest, Model
from promptopt.models.budget import Budget
from promptopt.models.fake import FakeModel
from promptopt.optimizers import OPTIMIZERS, APOOptimizer, OPROOptimizer, PE2Optimizer
from promptopt.optimizers.beam import lineage, score_on, select_beam
from promptopt.optimizers.pe2 import full_template
from promptopt.optimizers.presets import load_optimizer
from promptopt.optimizers.proposer import render_conversation
from promptopt.optimizers.screening import extract_instruction, screen_proposals
from promptopt.run.callbacks import TrialFinished
from promptopt.run.context import RunState
from promptopt.run.history import History, TrialRecord
from promptopt.testing import (
    TOY_BEST_INSTRUCTION,
    TOY_PARTIAL_INSTRUCTION,
    TOY_SEED_INSTRUCTION,
    make_toy_task,
    toy_model,
    write_toy_task,
)
from promptopt.testing.replay import CassetteMiss, RecordingModel, ReplayModel

CASSETTES = Path(__file__).parent / "cassettes"
FAMILY = ("pe2", "apo", "opro")


# -- extraction and screening -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Reverse the word.", "Reverse the word."),
        ("The new prompt is: Reverse the word.", "Reverse the word."),
        ("Here's the revised prompt:\n\nReverse the word.\n\nThis works because…", "Reverse the word."),
        ("## Prompt\nReverse the word.", "Reverse the word."),
        ('* "Reverse the word."\n* "Spell it backwards."', "Reverse the word."),
        ("Classify the review as positive or negative:", "Classify the review as positive or negative:"),
    ],
)
def test_extract_instruction_skips_announcements(reply: str, expected: str) -> None:
    assert extract_instruction(reply).instruction == expected


def test_extract_instruction_tags() -> None:
    opro = "Sure.\n<INS>Reverse the word.</INS> Hope this helps."
    assert extract_instruction(opro, tags=("INS", "prompt")).instruction == "Reverse the word."
    assert extract_instruction("<prompt>Spell it backwards.</prompt>", tags=("INS", "prompt")).instruction == (
        "Spell it backwards."
    )
    assert "<INS>" in (extract_instruction(opro).instruction or "")  # default tags: unchanged behaviour


def _state() -> RunState:
    task = make_toy_task()
    seed = TrialRecord(trial=0, step=0, prompt=task.seed_prompt(), result=None)
    return RunState(history=History(), seed_record=seed)


def test_screen_proposals_counts_every_rejection_and_measures_edits() -> None:
    state, parent = _state(), make_toy_task().seed_prompt()
    replies = [
        "",  # empty
        " ".join(["word"] * 30),  # too_long
        "Write {{ word }} backwards.",  # template_syntax
        "cat",  # echoes_input
        "Reverse <word>.",  # placeholder
        "I'm ready to help with your prompt!",  # chatter (first person)
        "Refine the prompt to be clearer.",  # chatter (talks about the prompt)
        "Reply with the prompt. Do not include other text.",  # also chatter
        "Reply with the new instruction only, as one sentence.",  # echoes_meta_prompt
        TOY_SEED_INSTRUCTION,  # duplicate (already seen)
        "Reverse the word, letter by letter, and say nothing else at all please.",  # step_size (> 4 words)
        "Reverse the word.",  # accepted: 1 word changed
        "Reverse the word.",  # duplicate of the accepted one
    ]
    meta_prompt = (Message("user", "Reply with the new instruction only, as one sentence."),)
    kids = screen_proposals(
        replies,
        parent,
        state,
        origin="test",
        seen={TOY_SEED_INSTRUCTION},
        max_words=20,
        forbidden=["cat"],
        step_size=4,
        metas=[{"k": i} for i in range(len(replies))],
        meta_prompts=[meta_prompt] * len(replies),
    )
    assert [k.instruction for k in kids] == ["Reverse the word."]
    assert dict(kids[0].meta) == {"step": 0, "edit_words": 1, "k": 11}
    assert kids[0].parents == (parent.id,) and kids[0].origin == "test"
    assert state.rejected == {
        "empty": 1,
        "too_long": 1,
        "template_syntax": 1,
        "echoes_input": 1,
        "placeholder": 1,
        "chatter": 3,
        "echoes_meta_prompt": 1,
        "duplicate": 2,
        "step_size": 1,
    }


# -- rendering ----------------------------------------------------------------------------------------
def test_render_conversation_splits_and_merges_turns() -> None:
    msgs = render_conversation(
        "pe2",
        task_description=False,
        context=False,
        reasoning_template=False,
        prompt="Repeat the word.",
        full_template="",
        failures=[{"input": "cat", "prediction": "cat", "output": "tac"}],
        history=None,
        current_score="0.25",
        step_size=None,
        max_words=50,
        reasoning="It should reverse.",
    )
    assert [m.role for m in msgs] == ["user", "assistant", "user"]
    assert msgs[0].content.startswith("## Prompt\nRepeat the word.") and "\n\n\n" not in msgs[0].content
    assert msgs[1].content == "It should reverse."
    assert msgs[2].content.startswith("Now please carefully review your reasoning and refine the prompt.")
    single = render_conversation("ape_resample", instruction="Reverse the word.")
    assert len(single) == 1 and single[0].role == "user"


def test_full_template_shows_inputs_as_placeholders() -> None:
    prompt = make_toy_task().seed_prompt()
    assert full_template(prompt) == "Repeat the word.\n\nWord: <word>\nAnswer:"
    assert full_template(prompt, instruction="<INS>").startswith("<INS>\n")


# -- beam, lineage, racing --------------------------------------------------------------------------------
def _record(trial: int, prompt: promptopt.Prompt, scores: dict[str, float], *, full: bool = True) -> TrialRecord:
    records = tuple(ExampleRecord(example_id=k, prediction="x", score=v) for k, v in scores.items())
    result = EvalResult(prompt_id=prompt.id, split="dev", mode="generate", records=records)
    return TrialRecord(trial=trial, step=trial, prompt=prompt, result=result, full=full)


def test_select_beam_lineage_and_score_on() -> None:
    seed = make_toy_task().seed_prompt()
    a = seed.with_instruction("Reverse the word.", origin="pe2", round=1, edit_words=1)
    b = a.with_instruction("Reverse the word, letter by letter.", origin="pe2", round=2, edit_words=4)
    c = seed.with_instruction("Say the word.", origin="pe2", round=1, edit_words=1)
    h = History()
    for rec in (
        _record(0, seed, {"x": 0, "y": 0}),
        _record(1, a, {"x": 1, "y": 0}),
        _record(2, c, {"x": 1}, full=False),
        _record(3, c, {"x": 0, "y": 1}),
        _record(4, b, {"x": 1, "y": 1}),
    ):
        h.append(rec)
    assert [r.trial for r in select_beam(h, 3)] == [4, 1, 3]  # ties: the earlier trial first
    edits = lineage(h.records[4], h, limit=5)
    assert [(e.step, e.before, e.after, e.words, e.score_before, e.score_after) for e in edits] == [
        (1, TOY_SEED_INSTRUCTION, "Reverse the word.", 1, 0.0, 0.5),
        (2, "Reverse the word.", "Reverse the word, letter by letter.", 4, 0.5, 1.0),
    ]
    assert len(lineage(h.records[4], h, limit=1)) == 1
    ex = [Example(id="x", inputs={"word": "a"}, target="a")]
    assert score_on(h.records[1], ex) == 1.0
    assert score_on(h.records[1], [Example(id="z", inputs={"word": "a"}, target="a")]) is None


def test_a_child_is_promoted_only_if_it_beats_its_parent_on_the_race(tmp_path: Path) -> None:
    """Every full-dev child scored higher than its parent on the minibatch it was raced on."""
    run(PE2Optimizer(minibatch_size=6), budget=300, run_dir=tmp_path / "run")
    rows = history_rows(tmp_path / "run")
    by_id = {r["prompt"]["id"]: r for r in rows if r["full"]}
    for r in rows:
        if not r["full"] or not r["prompt"]["parents"]:
            continue
        race = next(x for x in rows if not x["full"] and x["prompt"]["id"] == r["prompt"]["id"])
        ids = [e["example_id"] for e in race["result"]["records"]]
        parent = {e["example_id"]: e["score"] for e in by_id[r["prompt"]["parents"][0]]["result"]["records"]}
        assert race["summary"]["mean"] > sum(parent[i] for i in ids) / len(ids)


def test_without_the_race_guard_ties_are_promoted(tmp_path: Path) -> None:
    guarded = run(PE2Optimizer(minibatch_size=6, n_steps=2), budget=400, run_dir=tmp_path / "a")
    unguarded = run(PE2Optimizer(minibatch_size=6, n_steps=2, min_gain=None), budget=400, run_dir=tmp_path / "b")
    assert unguarded.n_trials > guarded.n_trials
    assert sum(r["full"] for r in history_rows(tmp_path / "b")) > sum(r["full"] for r in history_rows(tmp_path / "a"))


def test_no_race_when_dev_is_small() -> None:
    result = run(PE2Optimizer(minibatch_size=12), budget=300)  # toy dev has 12 examples
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION


# -- configs and presets ---------------------------------------------------------------------------------
def test_configs_validate_and_round_trip() -> None:
    with pytest.raises(ConfigError, match="failure_split"):
        PE2Optimizer(failure_split="test")
    with pytest.raises(ConfigError, match="n_children"):
        load_optimizer("pe2", n_children=0)
    with pytest.raises(ConfigError, match="unknown setting"):
        OPROOptimizer.from_config({"n_failures": 2})  # OPRO shows no failures
    for name in FAMILY:
        opt = OPTIMIZERS.get(name)()
        assert type(opt).from_config(opt.to_config()).config == opt.config
        assert opt.uses_proposer


@pytest.mark.parametrize(
    "preset",
    ["pe2", "pe2-no-task-description", "pe2-no-context", "pe2-no-reasoning", "pe2-no-momentum", "pe2-step-size",
     "apo", "opro"],
)  # fmt: skip
def test_presets_load(preset: str) -> None:
    opt = load_optimizer(preset)
    assert opt.name == preset.split("-")[0]


def test_apo_and_opro_presets_spell_out_the_defaults() -> None:
    assert load_optimizer("apo").config == APOOptimizer().config
    assert load_optimizer("opro").config == OPROOptimizer().config


# -- determinism, budget, resume ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", FAMILY)
def test_budget_is_never_exceeded(name: str) -> None:
    for budget in (40, 75, 130):
        result = run(load_optimizer(name, minibatch_size=6), budget=budget)
        assert result.usage["by_role"]["task"]["calls"] + result.usage["by_role"]["proposer"]["calls"] <= budget


TIGHT = {"pe2": 80, "apo": 60, "opro": 60}
"""Budgets at which (with a cache, minibatch_size=6) the budget plan shrinks a step."""


def _interrupt_at(trial: int):
    def callback(event: object) -> None:
        if isinstance(event, TrialFinished) and event.record.trial == trial:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("name", FAMILY)
def test_resume_replays_to_the_same_result(name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Interrupt a run whose steps the budget plan shrinks, resume it with the same budget: same history and
    spend as one uninterrupted run (plans count every request, cache hits included, so they replay)."""
    caplog.set_level(logging.INFO, logger="promptopt.optimizers.beam")
    budget = TIGHT[name]
    straight = run(
        load_optimizer(name, minibatch_size=6),
        budget=budget,
        run_dir=tmp_path / "straight",
        cache=tmp_path / "s.sqlite",
    )
    assert "shrunk to the budget" in caplog.text
    cache = tmp_path / "cache.sqlite"
    with pytest.raises(KeyboardInterrupt):
        run(
            load_optimizer(name, minibatch_size=6),
            budget=budget,
            run_dir=tmp_path / "resumed",
            cache=cache,
            callbacks=[_interrupt_at(3)],
        )
    resumed = run(
        load_optimizer(name, minibatch_size=6), budget=budget, run_dir=tmp_path / "resumed", cache=cache, resume=True
    )
    assert history_rows(tmp_path / "resumed") == history_rows(tmp_path / "straight")
    assert resumed.best_prompt.to_dict() == straight.best_prompt.to_dict()
    assert resumed.stop_reason == straight.stop_reason
    for role in ("task", "proposer"):  # the replayed part was free: same spend as the straight run
        assert resumed.usage["by_role"][role]["calls"] == straight.usage["by_role"][role]["calls"]


@pytest.mark.parametrize("name", FAMILY)
def test_a_run_planned_out_resumes_with_a_bigger_budget(name: str, tmp_path: Path) -> None:
    """A run its budget plan ended, resumed with a bigger budget: the same history as one run with that budget."""
    straight = run(
        load_optimizer(name, minibatch_size=6), budget=200, run_dir=tmp_path / "straight", cache=tmp_path / "s.sqlite"
    )
    cache = tmp_path / "cache.sqlite"
    first = run(load_optimizer(name, minibatch_size=6), budget=45, run_dir=tmp_path / "resumed", cache=cache)
    assert first.stop_reason.startswith("budget planned out: ") and first.search["confirmed"] >= 1
    resumed = run(
        load_optimizer(name, minibatch_size=6), budget=200, run_dir=tmp_path / "resumed", cache=cache, resume=True
    )
    assert history_rows(tmp_path / "resumed") == history_rows(tmp_path / "straight")
    assert resumed.best_prompt.to_dict() == straight.best_prompt.to_dict()


# -- budget plan -------------------------------------------------------------------------------------------
MIN_CALLS = {"pe2": 8 + 2 + 6 + 12, "apo": 8 + 2 + 6 + 12, "opro": 1 + 6 + 12}
"""The first step for one child on the toy task (train 8, dev 12, minibatch_size=6): the seed's failure run on
the train split (pe2, apo), the child's proposer calls (pe2: analysis and edit; apo: gradient and edit; opro:
one sample), its race and its confirmation on full dev."""
ONE_CHILD_CALLS = {"pe2": 2, "apo": 2, "opro": 1}


@pytest.mark.parametrize("name", FAMILY)
def test_min_calls_is_the_first_step_for_one_child(name: str) -> None:
    task = make_toy_task()
    assert load_optimizer(name, minibatch_size=6).min_calls(task) == MIN_CALLS[name]
    assert load_optimizer(name, minibatch_size=12).min_calls(task) == MIN_CALLS[name] - 6  # no race: full dev once
    if name != "opro":  # failures from the dev results: no failure run
        assert load_optimizer(name, minibatch_size=6, failure_split="dev").min_calls(task) == MIN_CALLS[name] - 8


@pytest.mark.parametrize("name", FAMILY)
def test_a_budget_below_min_calls_is_refused_before_any_call(name: str) -> None:
    need = 12 + MIN_CALLS[name]
    model, proposer = toy_model(), scripted_editor()
    with pytest.raises(ConfigError, match=rf"--budget-calls {need}\b"):
        promptopt.optimize(
            make_toy_task(),
            load_optimizer(name, minibatch_size=6),
            model,
            proposer=proposer,
            budget=Budget(max_calls=need - 1),
            cache=False,
        )
    assert model.requests == [] and proposer.requests == []


@pytest.mark.parametrize("minibatch_size", [6, 12])
@pytest.mark.parametrize("name", FAMILY)
def test_the_smallest_budget_still_confirms_a_child(name: str, minibatch_size: int) -> None:
    """Seed + min_calls: the first step shrinks to one child, which is raced (dev permitting) and confirmed on
    full dev; then the plan ends the search instead of the budget cutting it short."""
    opt = load_optimizer(name, minibatch_size=minibatch_size)
    budget = 12 + opt.min_calls(make_toy_task())
    proposer = scripted_editor()
    result = run(opt, proposer=proposer, budget=budget, select="best")  # the plan, not the selection rule
    assert len(proposer.requests) == ONE_CHILD_CALLS[name]
    raced = minibatch_size < 12
    assert result.search == {"screened": int(raced), "confirmed": 1}
    assert result.best_prompt.instruction == TOY_PARTIAL_INSTRUCTION and result.best_dev["n"] == 12
    assert result.stop_reason.startswith("budget planned out: ")
    assert result.usage["by_role"]["task"]["calls"] + result.usage["by_role"]["proposer"]["calls"] <= budget


@pytest.mark.parametrize("extra", [0, 5, 13, 24, 38, 57, 80])
@pytest.mark.parametrize("name", FAMILY)
def test_no_budget_cuts_a_run_short(name: str, extra: int) -> None:
    """Whatever the budget (from the minimum up), the run ends by its plan or its search, never by running out
    mid-screening, and with at least one child confirmed on full dev."""
    budget = 12 + MIN_CALLS[name] + extra
    result = run(load_optimizer(name, minibatch_size=6), budget=budget)
    assert result.usage["by_role"]["task"]["calls"] + result.usage["by_role"]["proposer"]["calls"] <= budget
    assert "call budget spent" not in result.stop_reason
    assert result.search["confirmed"] >= 1


def unique_editor() -> FakeModel:
    """Every reply is a new instruction the screening accepts, so a step makes its worst case: every child."""
    return FakeModel(fn=lambda request: f"<prompt>Reverse word number {request.sample}.</prompt>", name="fake:unique")


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("pe2", {}),
        ("pe2", {"n_children": 3}),
        ("apo", {}),
        ("apo", {"edits_per_gradient": 2, "n_paraphrases": 2}),
        ("opro", {}),
        ("opro", {"n_samples": 3}),
    ],
)
def test_step_shape_is_what_children_make_at_worst(name: str, settings: dict[str, Any]) -> None:
    """The cost model the budget plan uses (children and proposer calls of a step) matches children()."""
    opt = load_optimizer(name, minibatch_size=6, n_steps=1, **settings)
    assert isinstance(opt, PE2Optimizer | APOOptimizer | OPROOptimizer)
    children, calls = opt.step_shape(1, opt.config)
    proposer = unique_editor()
    result = run(opt, proposer=proposer, budget=1000)
    assert len(proposer.requests) == calls
    assert result.search["screened"] == children and not result.rejected


# -- CLI ------------------------------------------------------------------------------------------------
def test_cli_optimize_pe2_with_progress_and_resume(tmp_path: Path) -> None:
    """The echo model answers every meta-prompt with its last line ("* Reply with the prompt. …"): all
    proposals are screened out as chatter, counted, and the run ends after n_steps."""
    task = write_toy_task(tmp_path / "toy")
    runs, cache = tmp_path / "runs", tmp_path / "cache.sqlite"
    cli = CliRunner()
    args = ["optimize", "--task", str(task), "--optimizer", "pe2", "--model", "fake:echo", "--budget-calls", "90"]
    args += ["--runs-dir", str(runs), "--cache", str(cache), "--set", "minibatch_size=6"]
    shown = cli.invoke(app, args)  # with the progress display
    assert shown.exit_code == 0, shown.output
    assert "budget (calls)" in shown.stderr and "best dev" in shown.stderr
    assert "optimizer pe2" in shown.stdout and "rejected proposals: chatter 8" in shown.stdout
    assert "stopped: optimizer finished" in shown.stdout
    run_dir = next(runs.iterdir())
    first = json.loads((run_dir / "result.json").read_text())
    code = cli.invoke(app, ["optimize", "--resume", str(run_dir), "--budget-calls", "150", "--json"])
    assert code.exit_code == 0, code.output
    resumed = json.loads(code.stdout)
    assert resumed["optimizer"] == "pe2" and resumed["optimizer_config"]["minibatch_size"] == 6
    assert resumed["best_prompt"] == first["best_prompt"] and resumed["rejected"] == first["rejected"]
    assert resumed["usage"]["by_role"]["task"]["calls"] == first["usage"]["by_role"]["task"]["calls"]  # replayed


# -- record / replay -------------------------------------------------------------------------------------
def test_recording_then_replay_gives_the_same_run(tmp_path: Path) -> None:
    cassette = tmp_path / "pe2.json"
    recorded = run(PE2Optimizer(minibatch_size=6), proposer=RecordingModel(scripted_editor(), cassette))
    replay = ReplayModel(cassette)
    replayed = run(PE2Optimizer(minibatch_size=6), proposer=replay)
    assert replayed.best_prompt.to_dict() == recorded.best_prompt.to_dict()
    assert replay.used == set(replay.responses)  # every recorded exchange was needed, none more
    assert replay.name == "fake:editor"


def test_replay_fails_loudly_on_an_unseen_request(tmp_path: Path) -> None:
    cassette = tmp_path / "c.json"
    recorder = RecordingModel(FakeModel(mapping={}, default="x"), cassette)
    recorder.generate([GenerationRequest(messages=(Message("user", "a"),))])
    replay = ReplayModel(cassette)
    assert replay.generate([GenerationRequest(messages=(Message("user", "a"),))])[0].text == "x"
    with pytest.raises(CassetteMiss, match="no recorded response"):
        replay.generate([GenerationRequest(messages=(Message("user", "b"),))])
    with pytest.raises(CassetteMiss):  # a different seed asks the proposer other things
        run(PE2Optimizer(minibatch_size=6), proposer=ReplayModel(cassette), seed=1)


def test_recording_scores_round_trip(tmp_path: Path) -> None:
    from promptopt.models.base import ScoreRequest

    cassette = tmp_path / "s.json"
    req = ScoreRequest(messages=(Message("user", "positive"),), continuations=("positive", "negative"))
    live = RecordingModel(FakeModel(fn=lambda r: "positive"), cassette).score([req])
    assert ReplayModel(cassette).score([req]) == live


GOLDEN_CONFIGS = {
    "pe2": {"n_steps": 2, "n_children": 2, "minibatch_size": 6},
    "apo": {"n_steps": 2, "n_gradients": 2, "minibatch_size": 6},
    "opro": {"n_steps": 3, "n_samples": 3, "minibatch_size": 6},
}


def _golden_run(name: str, proposer: Model) -> promptopt.OptimizationResult:
    return promptopt.optimize(
        make_toy_task(),
        load_optimizer(name, **GOLDEN_CONFIGS[name]),
        toy_model(),
        proposer=proposer,
        budget=Budget(max_calls=120),
        seed=0,
        cache=False,
        evaluate_test=False,
    )


def _summary(result: promptopt.OptimizationResult) -> dict[str, object]:
    return {
        "best_prompt": result.best_prompt.to_dict(),
        "best_dev": result.best_dev["mean"],
        "rejected": result.rejected,
        "n_trials": result.n_trials,
        "usage": {role: result.usage["by_role"][role]["calls"] for role in ("task", "proposer")},
    }


@pytest.mark.parametrize("name", FAMILY)
def test_golden_session_replays_to_the_recorded_best_prompt(name: str) -> None:
    """A run whose proposer was the embedded SmolLM2-135M, recorded once (``PROMPTOPT_RECORD=1`` re-records).

    The task model is the deterministic toy rule model, so the replay pins the whole pipeline: meta-prompt
    rendering (a changed meta-prompt is a cassette miss), parsing and screening of the small model's
    rambling replies, racing and beam selection."""
    cassette = CASSETTES / f"{name}_toy_smollm2.json"
    expected_file = CASSETTES / f"{name}_toy_smollm2.expected.json"
    if os.environ.get("PROMPTOPT_RECORD") == "1":
        pytest.importorskip("torch")
        from promptopt.models import get_model

        cassette.unlink(missing_ok=True)
        recorded = _golden_run(name, RecordingModel(get_model("smollm2"), cassette))
        expected_file.write_text(json.dumps(_summary(recorded), indent=1) + "\n")
    replay = ReplayModel(cassette)
    result = _golden_run(name, replay)
    assert _summary(result) == json.loads(expected_file.read_text())
    assert replay.used == set(replay.responses)


def test_rng_is_the_only_source_of_randomness(tmp_path: Path) -> None:
    """Module-level random state does not leak into a run."""
    random.seed(1)
    run(load_optimizer("apo", minibatch_size=6), budget=150, run_dir=tmp_path / "a")
    random.seed(2)
    run(load_optimizer("apo", minibatch_size=6), budget=150, run_dir=tmp_path / "b")
    assert history_rows(tmp_path / "a") == history_rows(tmp_path / "b")
