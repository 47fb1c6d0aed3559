"""The feedback-control optimizer on a synthetic plant with a known response.

The plant: a task model whose accuracy depends only on the instruction's length in words. With
``D = ideal - length``, dev example ``i`` (0..n-1) is answered correctly when ``0 <= D <= i`` (the prompt is
short by at most i words) or, if ``long_width`` is set, when ``0 < -D <= i * long_width`` (too long by a
little); without ``long_width`` any longer prompt is fine (a monotone plant). So the dev score is
``1 - D/n`` below the ideal and ``1 - |D|/(n * long_width)`` above it. Wrong answers say ``short`` or
``long``: that is the direction the scripted corrector reads from the failures. It then appends or
deletes exactly the number of words the controller grants (fresh words, so no prompt repeats).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

import promptopt
from promptopt import Budget, Example, make_task
from promptopt.core.exceptions import ConfigError
from promptopt.models.base import GenerationRequest
from promptopt.models.fake import FakeModel, last_user
from promptopt.optimizers.control import step_response
from promptopt.optimizers.feedback import FeedbackConfig, FeedbackOptimizer, magnitude
from promptopt.optimizers.feedback_trajectory import plot_trajectory, read_trajectory

PLANT_SYSTEM = "You are the plant."
SEED = "Answer the item."  # 3 words


@dataclass(frozen=True)
class Plant:
    ideal: int = 30
    n: int = 50
    long_width: float | None = None

    def task(self) -> promptopt.Task:
        exs = [Example(id=f"ex-{i:02d}", inputs={"item": f"item {i}"}, target="ok") for i in range(self.n)]
        return make_task(
            name="plant",
            template="{{ instruction }}\nItem: {{ item }}\nAnswer:",
            instruction=SEED,
            train=exs[:5],
            dev=exs,
            test=exs[:5],
            metric="exact_match",
            parser="first_line",
            system=PLANT_SYSTEM,
        )

    def correct(self, length: int, i: int) -> bool:
        d = self.ideal - length
        if d >= 0:
            return d <= i
        return self.long_width is None or -d <= i * self.long_width

    def score(self, length: int) -> float:
        return sum(self.correct(length, i) for i in range(self.n)) / self.n

    def answer(self, request: GenerationRequest) -> str:
        user = last_user(request.messages)
        length = len(user.splitlines()[0].split())
        i = int(re.search(r"Item: item (\d+)", user).group(1))
        if self.correct(length, i):
            return "ok"
        return "short" if length < self.ideal else "long"


def corrector(request: GenerationRequest) -> str:
    """Reads the instruction, the granted word budget and the failures' direction; edits exactly that much."""
    text = last_user(request.messages)
    if "In one or two sentences" in text:
        return "The instruction has the wrong length."
    instruction = re.search(r"^Instruction: (.*)$", text, re.MULTILINE).group(1)
    budget = int(re.search(r"change at most (\d+) word", text).group(1))
    answers = re.findall(r"^Model's answer: (\w+)", text, re.MULTILINE)
    words = instruction.split()
    if answers.count("long") > answers.count("short"):
        k = min(budget, len(words) - 1)
        new = words[k:]  # drop the oldest words: never returns to an earlier prompt
    else:
        new = words + [f"w{request.sample}x{j}" for j in range(budget)]
    return f"<prompt>{' '.join(new)}</prompt>"


def plant_model(plant: Plant) -> FakeModel:
    def fn(request: GenerationRequest) -> str:
        system = next(m.content for m in request.messages if m.role == "system")
        return plant.answer(request) if system == PLANT_SYSTEM else corrector(request)

    return FakeModel(fn=fn, name="fake:plant")


def run_plant(plant: Plant, *, max_calls: int = 2000, seed: int = 0, run_dir=None, **config):
    opt = FeedbackOptimizer(FeedbackConfig(**{"critique": False, "n_samples": 1, "max_edit_words": 20, **config}))
    model = plant_model(plant)
    result = promptopt.optimize(
        plant.task(),
        opt,
        model,
        budget=Budget(max_calls=max_calls),
        seed=seed,
        cache=False,
        evaluate_test=False,
        run_dir=run_dir,
    )
    return result, opt


def states(run_dir) -> list[int]:
    """Instruction lengths of the evaluated prompts, in order (the plant's hidden state)."""
    return [len(r.prompt.instruction.split()) for r in history(run_dir)]


def history(run_dir) -> list:
    from promptopt.run.history import History

    return History.load(run_dir / "history.jsonl")


# -- the magnitude mapping and the config -------------------------------------------------------------


def test_magnitude_is_monotone_and_clipped() -> None:
    c = FeedbackConfig(max_edit_words=20, min_failures=2, max_failures=6, min_temperature=0.2, max_temperature=1.0)
    us = [-1.0, 0.0, 0.01, 0.1, 0.3, 0.5, 0.9, 1.0, 3.0]
    ms = [magnitude(u, c) for u in us]
    for key in ("level", "max_words", "n_failures", "temperature"):
        values = [getattr(m, key) for m in ms]
        assert values == sorted(values), key
    assert (ms[0].max_words, ms[0].n_failures, ms[0].temperature) == (0, 2, 0.2)  # u <= 0: a hold
    assert ms[2].max_words == 0  # deadband: 0.2 words round to none
    assert (ms[-1].max_words, ms[-1].n_failures, ms[-1].temperature) == (20, 6, 1.0)  # u >= 1: saturated
    assert ms[5].max_words == 10


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"controller": "pd"}, "controller"),
        ({"accept": "sometimes"}, "accept"),
        ({"setpoint": 1.5}, "setpoint"),
        ({"setpoint": 0.0}, "setpoint"),
        ({"derivative_filter": 1.0}, "derivative_filter"),
        ({"kp": -1.0}, "kp"),
        ({"min_failures": 5, "max_failures": 2}, "min_failures"),
        ({"min_temperature": 1.0, "max_temperature": 0.5}, "min_temperature"),
    ],
)
def test_config_is_validated(changes: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        FeedbackConfig(**changes)
    assert info.value.field == field


def test_controller_type_zeroes_unused_gains() -> None:
    assert FeedbackConfig(controller="p", kp=1, ki=2, kd=3).gains == (1, 0, 0)
    assert FeedbackConfig(controller="pi", kp=1, ki=2, kd=3).gains == (1, 2, 0)
    assert FeedbackConfig(controller="pid", kp=1, ki=2, kd=3).gains == (1, 2, 3)


@pytest.mark.parametrize("preset", ["p", "pi", "pid"])
def test_presets_load_and_round_trip(preset: str) -> None:
    opt = promptopt.load_optimizer(preset)
    assert isinstance(opt, FeedbackOptimizer)
    assert opt.config.controller == preset
    assert FeedbackOptimizer.from_config(opt.to_config()).config == opt.config


# -- textbook behaviour on the synthetic plant ---------------------------------------------------------


def test_p_leaves_steady_state_error_that_pi_removes() -> None:
    plant = Plant()  # monotone: longer than ideal is fine, so pushing harder never hurts
    kp, words = 1.0, 20
    p_res, p_opt = run_plant(plant, controller="p", kp=kp, tolerance=0.01)
    pi_res, pi_opt = run_plant(plant, controller="pi", kp=kp, ki=0.1, tolerance=0.01)

    # P: the correction shrinks with the error until it rounds to 0 words; the loop holds with an offset
    assert p_res.stop_reason.startswith("stalled")
    e_ss = 1 - p_opt.scores[-1]
    assert 0.01 < e_ss <= 1 / (2 * kp * words)  # the deadband bound
    assert p_opt.trajectory[-1]["max_words"] == 0
    assert p_opt.scores == sorted(p_opt.scores)  # monotone, no overshoot

    # PI: the integral keeps the correction above the deadband until the error is gone
    assert pi_res.stop_reason.startswith("setpoint reached")
    assert pi_opt.scores[-1] == 1.0
    assert pi_res.best_dev["mean"] == 1.0 > p_res.best_dev["mean"]
    assert len(pi_opt.scores) <= len(p_opt.scores)


def test_high_gain_overshoots_and_oscillation_detection_stops_it(tmp_path) -> None:
    plant = Plant(long_width=0.5)  # peaked: too long hurts twice as fast as too short
    low, low_opt = run_plant(plant, controller="p", kp=2.0, tolerance=0.01, run_dir=tmp_path / "low")
    high, high_opt = run_plant(plant, controller="p", kp=10.0, tolerance=0.01, run_dir=tmp_path / "high")

    # moderate gain: monotone approach, the prompt never passes the ideal length
    assert low.stop_reason.startswith("setpoint reached")
    assert step_response(low_opt.scores).sign_changes == 0
    assert max(states(tmp_path / "low")) <= plant.ideal

    # high gain saturates the step (20 words every tick): the prompt overshoots the ideal and bounces
    lengths = states(tmp_path / "high")
    assert max(lengths) > plant.ideal
    overshoot_words = (max(lengths) - plant.ideal) / (plant.ideal - lengths[0])
    assert overshoot_words > 0.3
    assert all(t["max_words"] == 20 for t in high_opt.trajectory)
    resp = step_response(high_opt.scores)
    assert resp.sign_changes >= 4
    assert high.stop_reason.startswith("oscillation")
    assert len(high_opt.scores) == 6  # up, down, up, down, up: stopped at the 4th flip, long before the budget
    assert high.best_dev["mean"] < low.best_dev["mean"]


def test_anti_windup_bounds_the_integral() -> None:
    plant = Plant(long_width=0.5)
    kwargs = {"controller": "pi", "kp": 1.0, "ki": 0.3, "tolerance": 0.01}
    wound, wound_opt = run_plant(plant, integral_limit=None, **kwargs)
    clamped, clamped_opt = run_plant(plant, integral_limit=0.1, **kwargs)

    assert max(t["i"] for t in clamped_opt.trajectory) <= 0.1 + 1e-9
    assert max(t["i"] for t in wound_opt.trajectory) > 0.5  # winds up (until u saturates and it is frozen)
    # the wound-up integral keeps the steps large long after the error is small: the loop falls apart
    assert max(t["max_words"] for t in wound_opt.trajectory[3:]) > 15
    assert max(t["max_words"] for t in clamped_opt.trajectory[3:]) <= 4
    assert wound_opt.scores[-1] < 0.8 < clamped_opt.scores[-1]
    assert wound.stop_reason.startswith("oscillation")
    assert clamped.stop_reason.startswith("settled")  # limit cycle between prompts that score alike


def test_derivative_term_damps_the_approach() -> None:
    plant = Plant(long_width=0.5)
    kwargs = {"kp": 1.0, "ki": 0.3, "integral_limit": 0.1, "tolerance": 0.01, "derivative_filter": 0.5}
    pi, _ = run_plant(plant, controller="pi", **kwargs)
    pid, pid_opt = run_plant(plant, controller="pid", kd=1.0, **kwargs)
    assert not pi.stop_reason.startswith("setpoint reached")
    assert pid.stop_reason.startswith("setpoint reached")
    assert all(t["d"] <= 0 for t in pid_opt.trajectory)  # the error only fell: D brakes every step
    assert step_response(pid_opt.scores).sign_changes == 0


# -- mechanics ------------------------------------------------------------------------------------------


def test_over_limit_proposals_are_rejected_as_step_size() -> None:
    plant = Plant()

    def greedy(request: GenerationRequest) -> str:  # ignores the word budget: always adds 25 words
        system = next(m.content for m in request.messages if m.role == "system")
        if system == PLANT_SYSTEM:
            return plant.answer(request)
        instruction = re.search(r"^Instruction: (.*)$", last_user(request.messages), re.MULTILINE).group(1)
        return instruction + " " + " ".join(f"g{request.sample}x{j}" for j in range(25))

    opt = FeedbackOptimizer(critique=False, n_samples=2, patience=3, max_edit_words=20)
    result = promptopt.optimize(plant.task(), opt, FakeModel(fn=greedy), cache=False, evaluate_test=False)
    assert result.rejected == {"step_size": 6}
    assert result.n_trials == 1  # nothing within the step size: only the seed was evaluated
    holds = [t for t in opt.trajectory if t["action"] == "hold"]
    assert len(holds) == 3 and all("step size" in t["reason"] for t in holds)
    assert opt._stop is not None and opt._stop.startswith("stalled")


def test_accept_improve_never_moves_the_plant_to_a_worse_prompt() -> None:
    plant = Plant(long_width=0.5)
    result, opt = run_plant(plant, controller="p", kp=10.0, tolerance=0.01, accept="improve")
    assert opt.scores == sorted(opt.scores)
    assert not result.stop_reason.startswith("oscillation")
    notes = [t["note"] for t in opt.trajectory if t["note"]]
    assert notes and all(n.startswith("correction rejected") for n in notes)


def test_critique_call_and_failures_reach_the_corrector() -> None:
    plant = Plant()
    model = plant_model(plant)
    opt = FeedbackOptimizer(critique=True, n_samples=1, controller="p", kp=1.0, tolerance=0.01, max_edit_words=20)
    promptopt.optimize(plant.task(), opt, model, cache=False, evaluate_test=False, budget=Budget(max_calls=200))
    proposer = [r for r in model.requests if r.messages[0].content != PLANT_SYSTEM]
    critiques = [r for r in proposer if "In one or two sentences" in r.messages[-1].content]
    rewrites = [r for r in proposer if "change at most" in r.messages[-1].content]
    assert critiques and len(critiques) == len(rewrites)
    assert "What went wrong: The instruction has the wrong length." in rewrites[0].messages[-1].content
    # the first tick has e = 0.54, u = 0.54: 11 words, 2 + round(0.54 * 4) = 4 failures shown
    first = rewrites[0].messages[-1].content
    assert "change at most 11 words" in first and first.count("Model's answer:") == 4
    temps = [r.temperature for r in rewrites]
    assert temps == sorted(temps, reverse=True)  # the error falls, so does the temperature


def test_same_seed_same_history(tmp_path) -> None:
    plant = Plant(long_width=0.5)
    kwargs = {"controller": "pid", "kp": 1.0, "ki": 0.3, "kd": 1.0, "integral_limit": 0.1, "tolerance": 0.01}

    def lines(run_dir) -> list[dict]:
        out = []
        for line in (run_dir / "history.jsonl").read_text().splitlines():
            d = json.loads(line)
            d.pop("elapsed")
            out.append(d)
        return out

    run_plant(plant, seed=3, run_dir=tmp_path / "a", **kwargs)
    run_plant(plant, seed=3, run_dir=tmp_path / "b", **kwargs)
    assert lines(tmp_path / "a") == lines(tmp_path / "b")


def test_trajectory_is_stored_in_history_and_plotted(tmp_path) -> None:
    plant = Plant(long_width=0.5)
    _, opt = run_plant(plant, controller="p", kp=10.0, tolerance=0.01, run_dir=tmp_path / "run")
    records = history(tmp_path / "run")
    for r in records[1:]:
        fb = r.prompt.meta["feedback"]
        assert fb["controller"] == "p" and fb["setpoint"] == 1.0
        edit = fb["ticks"][-1]
        assert edit["action"] == "edit" and edit["candidate"] == r.prompt.id
        assert {"error", "p", "i", "d", "u", "max_words", "edit_words", "score"} <= set(edit)
    tr = read_trajectory(tmp_path / "run")
    assert list(tr.scores) == opt.scores == [r.mean for r in records]
    assert [t["tick"] for t in tr.ticks] == list(range(len(tr.ticks)))
    assert tr.ticks == tuple(opt.trajectory)  # feedback_trajectory.json: every tick, the final one included
    assert tr.ticks[-1]["action"] == "stop" and tr.ticks[-1]["reason"].startswith("oscillation")
    from_meta = read_trajectory(records)  # without the run directory: the ticks the candidates carry
    assert from_meta.ticks == tr.ticks[:-1] and from_meta.scores == tr.scores
    pytest.importorskip("matplotlib")
    out = plot_trajectory(tmp_path / "run", tmp_path / "trajectory.png")
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"


def test_resume_replays_an_interrupted_run(tmp_path) -> None:
    plant = Plant(long_width=0.5)
    kwargs = {"controller": "pi", "kp": 1.0, "ki": 0.1, "tolerance": 0.01}
    cache = tmp_path / "cache.sqlite"

    def run(run_dir, max_calls: int, resume: bool = False):
        opt = FeedbackOptimizer(FeedbackConfig(critique=False, n_samples=1, max_edit_words=20, **kwargs))
        return promptopt.optimize(
            plant.task(),
            opt,
            plant_model(plant),
            budget=Budget(max_calls=max_calls),
            cache=cache,
            evaluate_test=False,
            run_dir=run_dir,
            resume=resume,
        )

    full = run(tmp_path / "full", 2000)
    cache.unlink()
    cut = run(tmp_path / "cut", 120)
    assert cut.stop_reason.startswith("call budget") and cut.n_trials < full.n_trials
    resumed = run(tmp_path / "cut", 2000, resume=True)
    assert resumed.best_prompt == full.best_prompt
    assert resumed.n_trials == full.n_trials
    assert [r.prompt.id for r in history(tmp_path / "cut")] == [r.prompt.id for r in history(tmp_path / "full")]


def test_announce_only_lead_ins_are_dropped() -> None:
    from promptopt.optimizers.feedback import strip_lead_in

    assert strip_lead_in("Here's the revised instruction:\n\nLabel the review.") == "Label the review."
    assert strip_lead_in("Sure:\n\n<prompt>Label it.</prompt>") == "Sure:\n\n<prompt>Label it.</prompt>"
    assert strip_lead_in("Only this:") == "Only this:"


def test_finds_the_toy_tasks_known_optimum() -> None:
    from promptopt.testing import TOY_BEST_INSTRUCTION, make_toy_task, toy_model

    proposals = ["The prompt says nothing about reversing.", f"<prompt>{TOY_BEST_INSTRUCTION}</prompt>"]
    result = promptopt.optimize(make_toy_task(), "pid", toy_model(proposals), cache=False)
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION
    assert result.best_test["mean"] == 1.0
    assert result.stop_reason.startswith("setpoint reached")
    assert result.best_prompt.origin == "feedback:pid"
