"""structure_search: Optuna TPE over prompt structure — finds the toy optimum, resumes after a kill, shares
one study between workers, robust objective; plain points first, screened instructions, budget planning that
always confirms a candidate on full dev."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import promptopt
from promptopt.core.exceptions import ConfigError
from promptopt.optimizers.presets import load_optimizer
from promptopt.testing import TOY_BEST_INSTRUCTION, TOY_PARTIAL_INSTRUCTION, make_toy_task, toy_model

optuna = pytest.importorskip("optuna")

PROPOSALS = [TOY_PARTIAL_INSTRUCTION, TOY_BEST_INSTRUCTION, "Say the word."]


def search(**overrides):
    settings = {"n_trials": 16, "minibatch_size": 6, "full_eval_every": 4, "n_instructions": 3, "shots": [0, 2]}
    return load_optimizer("structure_search", **{**settings, **overrides})


def trials(storage: str, name: str = "promptopt-toy-seed0") -> list:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)


def test_finds_the_known_optimum_and_stores_the_study(tmp_run_dir):
    task = make_toy_task()
    result = promptopt.optimize(task, search(), toy_model(PROPOSALS), run_dir=tmp_run_dir, cache=False)
    assert result.best_dev["mean"] == 1.0
    assert "reverse" in result.best_prompt.instruction.lower()
    done = trials(f"sqlite:///{tmp_run_dir / 'optuna.sqlite'}")
    assert len(done) == 16 and all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    assert {p["instruction"] for p in (t.params for t in done)} <= {0, 1, 2, 3}


def test_same_seed_same_trials():
    task = make_toy_task()
    a = promptopt.optimize(task, search(), toy_model(PROPOSALS), cache=False, evaluate_test=False)
    b = promptopt.optimize(task, search(), toy_model(PROPOSALS), cache=False, evaluate_test=False)
    assert a.best_prompt.id == b.best_prompt.id and a.n_trials == b.n_trials


def test_two_workers_share_one_study(tmp_path):
    task = make_toy_task()
    storage = f"sqlite:///{tmp_path / 'shared.sqlite'}"
    opt = search(n_trials=12, storage=storage, study_name="shared")
    promptopt.optimize(task, opt, toy_model(PROPOSALS), run_dir=tmp_path / "w1", cache=False, evaluate_test=False,
                       budget=promptopt.Budget(max_calls=12 + 5 * 6 + 3))  # fmt: skip
    first = [t for t in trials(storage, "shared") if t.state == optuna.trial.TrialState.COMPLETE]
    assert 0 < len(first) < 12
    promptopt.optimize(task, opt, toy_model(PROPOSALS), run_dir=tmp_path / "w2", cache=False, evaluate_test=False)
    done = trials(storage, "shared")
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 12  # the second worker only ran what was left
    workers = {t.user_attrs["worker"] for t in complete}
    assert workers == {str((tmp_path / "w1").resolve()), str((tmp_path / "w2").resolve())}


def test_robust_objective_scores_each_trial_over_formats(tmp_run_dir):
    task = make_toy_task()
    opt = search(n_trials=6, robust="worst", n_robust_formats=3)
    result = promptopt.optimize(task, opt, toy_model(PROPOSALS), run_dir=tmp_run_dir, cache=False)
    minibatch = [r for r in promptopt.run.history.History.load(tmp_run_dir / "history.jsonl") if not r.full]
    assert len(minibatch) == 6 * 3  # every trial: the candidate under 3 formats
    done = trials(f"sqlite:///{tmp_run_dir / 'optuna.sqlite'}")
    for t, i in zip(done, range(0, 18, 3), strict=True):
        assert t.value == min(r.mean for r in minibatch[i : i + 3])
    assert result.best_dev is not None


def test_plain_points_are_the_first_trials(tmp_run_dir):
    task = make_toy_task()
    opt = search(n_trials=6, shots=[0, 2, 4, 8], ks=[1, 3], n_formats=3)
    promptopt.optimize(task, opt, toy_model(PROPOSALS), run_dir=tmp_run_dir, cache=False, evaluate_test=False)
    plain = {"instruction": 0, "shots": 4, "demo_seed": 0, "strategy": "random", "k": 1, "format": 0}
    assert [t.params for t in opt.study.get_trials()[:3]] == [
        {"instruction": 0, "shots": 0, "format": 0},  # the seed prompt itself: told from its dev record, no calls
        {**plain, "demo_format": "inline"},
        {**plain, "demo_format": "turns"},
    ]
    assert opt.space.instructions[0] == task.instruction
    history = promptopt.run.history.History.load(tmp_run_dir / "history.jsonl")
    screened = [r for r in history if not r.full][:2]
    assert [(r.prompt.instruction, len(r.prompt.demos), r.prompt.demo_format) for r in screened] == [
        (task.instruction, 4, "inline"),
        (task.instruction, 4, "turns"),
    ]


@pytest.mark.parametrize("robust", ["none", "worst"])
@pytest.mark.parametrize("cached", [False, True])
def test_tight_budgets_end_on_a_confirmed_candidate(tmp_path, robust, cached):
    task = make_toy_task()
    minimum = len(task.dev) + search(robust=robust, n_robust_formats=2).min_calls(task)
    for extra in (0, 1, 5, 11, 17, 30):
        opt = search(robust=robust, n_robust_formats=2)
        cache = tmp_path / f"cache-{robust}-{extra}.sqlite" if cached else False
        run_dir = tmp_path / f"run-{robust}-{cached}-{extra}"
        budget = promptopt.Budget(max_calls=minimum + extra)
        result = promptopt.optimize(task, opt, toy_model(PROPOSALS), budget=budget, cache=cache, run_dir=run_dir,
                                    evaluate_test=False)  # fmt: skip
        history = promptopt.run.history.History.load(run_dir / "history.jsonl")
        assert result.search["confirmed"] >= 1, (extra, result.stop_reason)
        assert history[-1].full and history[-1].prompt.id != result.seed_prompt.id  # ended on a confirmation
        assert result.usage["total"]["calls"] <= minimum + extra
        states = optuna.trial.TrialState
        done = opt.study.get_trials(deepcopy=False)
        assert not [t for t in done if t.state == states.RUNNING]  # nothing asked that the budget could not pay
        retried = {t.user_attrs.get("retry_of") for t in done if t.state == states.WAITING}
        assert {t.number for t in done if t.state == states.FAIL} <= retried  # handed back, not lost


def test_trials_are_priced_at_their_own_ics_k_so_the_budget_is_used():
    # pricing every trial at the largest K (3) stopped this search after 2 trials with 29 of 80 calls unused
    task = make_toy_task()
    for budget in (80, 130):
        opt = search(ks=[1, 3], n_trials=40)
        result = promptopt.optimize(task, opt, toy_model(PROPOSALS), budget=promptopt.Budget(max_calls=budget),
                                    cache=False, evaluate_test=False)  # fmt: skip
        assert budget - 2 * 6 <= result.usage["total"]["calls"] <= budget  # at most two minibatches unused
        assert result.search["confirmed"] >= 1 and result.best_dev["mean"] == 1.0
        states = optuna.trial.TrialState
        assert not [t for t in opt.study.get_trials(deepcopy=False) if t.state == states.RUNNING]


def test_the_shipped_preset_spends_its_budget_and_confirms_its_leaders():
    # reserving the two dearest unconfirmed candidates (not the two leaders) left 84 of 400 calls unused here
    task = make_toy_task(n_train=8, n_dev=20, n_test=4)
    screened = {}
    for cached in (False, True):
        opt = load_optimizer("structure-search")
        cache = promptopt.ResponseCache(":memory:") if cached else False
        result = promptopt.optimize(task, opt, toy_model(PROPOSALS), budget=promptopt.Budget(max_calls=400),
                                    cache=cache, evaluate_test=False)  # fmt: skip
        assert result.search["confirmed"] >= 2
        screened[cached] = result.search["screened"]
        if not cached:
            assert result.usage["total"]["calls"] >= 400 - 16 * 3  # less than one K=3 minibatch unused
    # with a cache a leader's minibatch examples are hits when it is confirmed, so more trials fit
    assert screened[True] > screened[False]


def test_a_budget_below_the_minimum_is_refused_before_any_call():
    task = make_toy_task()
    opt = search()
    needed = len(task.dev) + opt.min_calls(task)
    model = toy_model(PROPOSALS)
    with pytest.raises(ConfigError, match=f"--budget-calls {needed}"):
        promptopt.optimize(task, opt, model, budget=promptopt.Budget(max_calls=needed - 1), cache=False)
    assert model.requests == []
    assert opt.min_calls(task) == 6 + 12  # one minibatch trial and one confirmation on the 12 dev examples


def test_chatter_from_the_proposer_is_not_an_instruction():
    task = make_toy_task()
    chatter = "I'm happy to help! Here is the prompt:"
    opt = search(n_trials=4, n_instructions=2)
    result = promptopt.optimize(task, opt, toy_model([chatter, TOY_BEST_INSTRUCTION]), cache=False,
                                evaluate_test=False)  # fmt: skip
    assert opt.space.instructions == [task.instruction, TOY_BEST_INSTRUCTION]
    assert result.rejected == {"chatter": 1}


RUN = textwrap.dedent(
    """
    import sqlite3, sys, time
    from pathlib import Path
    import promptopt
    from promptopt.optimizers.presets import load_optimizer
    from promptopt.testing import make_toy_task, rule_model, toy_answer, TOY_SYSTEM

    def slow(user):
        # once 5 trials are complete, hang inside the next evaluation until the test kills us (no timing race)
        db = Path(run_dir) / "optuna.sqlite"
        if db.is_file():
            with sqlite3.connect(db, timeout=30) as con:
                done = con.execute("SELECT COUNT(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
            if done >= 5:
                (Path(run_dir) / "hanging").touch()
                time.sleep(3600)
        return toy_answer(user)

    run_dir, cache, proposals = sys.argv[1], sys.argv[2], sys.argv[3:]
    model = rule_model(slow, proposals, task_system=TOY_SYSTEM, name="fake:toy")
    opt = load_optimizer("structure_search", n_trials=14, minibatch_size=6, full_eval_every=4, n_instructions=3,
                         shots=[0, 2])
    promptopt.optimize(make_toy_task(), opt, model, run_dir=run_dir, cache=cache, resume=len(sys.argv) > 99)
    """
)


def test_resumes_after_the_process_is_killed(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    storage = f"sqlite:///{run_dir / 'optuna.sqlite'}"
    script = tmp_path / "run.py"
    script.write_text(RUN)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "stderr.txt"
    with log.open("wb") as err:
        proc = subprocess.Popen([sys.executable, str(script), str(run_dir), str(cache), *PROPOSALS], env=env,
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None and not (run_dir / "hanging").exists():
        time.sleep(0.2)
    assert (run_dir / "hanging").exists(), log.read_text()  # the child is stuck mid-run after 5 trials
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    before = {t.number: t for t in trials(storage) if t.state == optuna.trial.TrialState.COMPLETE}
    running = [t for t in trials(storage) if t.state == optuna.trial.TrialState.RUNNING]
    assert 4 <= len(before) < 14

    from promptopt.testing import TOY_SYSTEM, rule_model, toy_answer

    model = rule_model(toy_answer, PROPOSALS, task_system=TOY_SYSTEM, name="fake:toy")
    opt = search(n_trials=14, minibatch_size=6, full_eval_every=4, n_instructions=3, shots=[0, 2])
    result = promptopt.optimize(make_toy_task(), opt, model, run_dir=run_dir, cache=cache, resume=True)

    after = trials(storage)
    complete = {t.number: t for t in after if t.state == optuna.trial.TrialState.COMPLETE}
    assert len(complete) == 14  # finished the remaining trials...
    for number, t in before.items():  # ...without touching the finished ones
        assert complete[number].params == t.params and complete[number].value == t.value
    new = [t for n, t in complete.items() if n not in before]
    assert len(new) == 14 - len(before) and min(t.number for t in new) > max(before)
    failed = [t for t in after if t.state == optuna.trial.TrialState.FAIL]
    assert [t.number for t in failed] == [t.number for t in running]  # the interrupted trial...
    retried = {t.user_attrs.get("retry_of") for t in new}
    assert {t.number for t in running} <= retried  # ...was queued again with the same parameters
    # no proposer calls on resume: the instruction candidates come from the study
    assert all(r.messages[0].content == TOY_SYSTEM for r in model.requests)
    assert result.best_dev["mean"] >= result.baseline_dev["mean"]
    assert Path(result.run_dir or "") == run_dir
