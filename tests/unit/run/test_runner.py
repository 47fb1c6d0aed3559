"""The runner: baseline, APE on the toy task, determinism, budget hard stop, run directory, resume, callbacks."""

from __future__ import annotations

import json
from collections.abc import Sequence

import pytest

import promptopt
from promptopt import Budget, BudgetExhausted, ConfigError, OptimizationResult, Prompt, load_optimizer, optimize
from promptopt.models.cache import request_key
from promptopt.optimizers import Optimizer
from promptopt.run.callbacks import EvaluationProgress, RunFinished, RunStarted, TrialFinished
from promptopt.testing import (
    TOY_BEST_INSTRUCTION,
    TOY_PARTIAL_INSTRUCTION,
    TOY_SEED_INSTRUCTION,
    scripted_proposer,
    toy_expected_score,
    toy_model,
    write_toy_task,
)

# The proposer's replies by sample index: 4 inductions, then 2 paraphrases for each of the top 2 prompts.
SCRIPT = [
    TOY_SEED_INSTRUCTION,  # 1: the seed again -> rejected as a duplicate
    "Say the word.",  # 2: as good as the seed
    TOY_PARTIAL_INSTRUCTION,  # 3: better (says 'reverse')
    "Write the word out.",  # 4: as good as the seed
    TOY_BEST_INSTRUCTION,  # 5: paraphrase of the best so far (3) -> the known optimum
    "Reverse this word.",  # 6
    "Spell the word.",  # 7: paraphrases of the 2nd best (the seed)
    "Repeat the word, please.",  # 8
]


def ape():
    return load_optimizer("ape", n_prompts=4, minibatch_size=6, top_k=2, resample_rounds=1, n_resample=2)


def keys(model) -> list[str]:
    return [request_key(model.name, r.key()) for r in model.requests]


def essence(records) -> list[tuple]:
    """What a trial record says about the search, without timings and cache/call bookkeeping."""
    return [
        (r.trial, r.step, r.full, r.status, r.prompt.to_dict(), r.result.scores if r.result else None) for r in records
    ]


# -- baseline ---------------------------------------------------------------------------------------------


def test_baseline_evaluates_only_the_seed_prompt(toy_task):
    model = toy_model()
    result = optimize(toy_task, "baseline", model, cache=":memory:")
    assert result.n_trials == 1
    assert result.best_prompt == result.seed_prompt == toy_task.seed_prompt()
    assert not result.improved
    assert result.stop_reason == "optimizer finished"
    assert result.best_dev["mean"] == pytest.approx(toy_expected_score(TOY_SEED_INSTRUCTION, toy_task.dev))
    assert result.baseline_test["mean"] == pytest.approx(toy_expected_score(TOY_SEED_INSTRUCTION, toy_task.test))
    assert result.test_comparison["diff"] == 0.0
    # dev once, test once: the second test evaluation (best == seed) is all cache hits
    assert len(model.requests) == len(toy_task.dev) + len(toy_task.test)
    assert result.usage["by_role"]["task"]["calls"] == len(toy_task.dev)
    assert result.usage["by_role"]["report"]["calls"] == len(toy_task.test)
    assert "proposer" not in result.usage["by_role"]


def test_baseline_without_test_split(toy_task):
    model = toy_model()
    result = optimize(toy_task, "baseline", model, cache=False, evaluate_test=False)
    assert result.best_test is None and result.baseline_test is None
    assert len(model.requests) == len(toy_task.dev)


# -- APE finds the known optimum -------------------------------------------------------------------------


def run_ape(task, **kw) -> tuple[OptimizationResult, object, object]:
    model, proposer = toy_model(), scripted_proposer(SCRIPT)
    kw.setdefault("cache", False)
    result = optimize(task, ape(), model, proposer=proposer, **kw)
    return result, model, proposer


def test_ape_finds_the_known_optimum(toy_task, tmp_run_dir):
    result, _, proposer = run_ape(toy_task, budget=Budget(max_calls=200), run_dir=tmp_run_dir)
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION
    assert result.improved
    assert result.best_dev["mean"] == 1.0
    assert result.best_test["mean"] == 1.0
    assert result.baseline_dev["mean"] == pytest.approx(toy_expected_score(TOY_SEED_INSTRUCTION, toy_task.dev))
    assert result.test_comparison["diff"] > 0
    assert result.stop_reason == "optimizer finished"
    assert result.rejected == {"duplicate": 1}
    assert len(proposer.requests) == 8
    assert result.usage["total"]["calls"] - result.usage["by_role"]["report"]["calls"] <= 200

    # the lineage: seed -> induced 'Reverse the word.' -> paraphrased optimum
    history = promptopt.run.history.History.load(tmp_run_dir / "history.jsonl")
    by_id = {r.prompt.id: r.prompt for r in history}
    best = result.best_prompt
    assert best.origin == "ape:resample"
    (parent_id,) = best.parents
    parent = by_id[parent_id]
    assert parent.instruction == TOY_PARTIAL_INSTRUCTION
    assert parent.origin == "ape:induce"
    assert parent.parents == (result.seed_prompt.id,)

    # minibatch screening first, then the full dev split for the promoted candidates only
    assert [(r.step, r.full) for r in history] == [
        (0, True),
        *[(1, False)] * 3,
        *[(2, True)] * 2,
        *[(3, False)] * 4,
        *[(4, True)] * 2,
    ]
    assert all(r.result.n == 6 for r in history if not r.full)
    assert [r.trial for r in history] == list(range(12))


def test_same_seed_same_result(toy_task):
    a, ma, pa = run_ape(toy_task, seed=7)
    b, mb, pb = run_ape(toy_task, seed=7)
    assert a.best_prompt.id == b.best_prompt.id
    assert keys(ma) == keys(mb) and keys(pa) == keys(pb)

    def comparable(r: OptimizationResult) -> dict:
        d = r.to_dict()
        for k in ("usage", "versions", "run_dir"):
            d.pop(k)
        return d

    assert comparable(a) == comparable(b)
    assert a.usage["total"]["calls"] == b.usage["total"]["calls"]


def test_same_seed_same_history_file(toy_task, tmp_path):
    run_ape(toy_task, seed=3, run_dir=tmp_path / "a")
    run_ape(toy_task, seed=3, run_dir=tmp_path / "b")
    ha = [json.loads(line) for line in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(line) for line in (tmp_path / "b" / "history.jsonl").read_text().splitlines()]
    for h in (*ha, *hb):
        h.pop("elapsed")
    assert ha == hb


def test_different_seed_changes_the_random_choices(toy_task):
    _, ma, _ = run_ape(toy_task, seed=0)
    _, mb, _ = run_ape(toy_task, seed=1)
    assert keys(ma) != keys(mb)  # another minibatch / other induction demos


# -- budget ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("max_calls", [34, 40, 57, 110])
def test_call_budget_is_never_exceeded_and_the_plan_ends_on_a_confirmation(toy_task, max_calls):
    # the exact cut of a batch at the call limit is tested on the client (test_cache_budget.py); optimizers plan
    # so the limit is never what stops them mid-screen
    result, model, proposer = run_ape(toy_task, budget=Budget(max_calls=max_calls))
    search = result.usage["by_role"]["task"]["calls"] + result.usage["by_role"].get("proposer", {}).get("calls", 0)
    assert search <= max_calls
    report_calls = result.usage["by_role"]["report"]["calls"]
    assert len(model.requests) + len(proposer.requests) == search + report_calls
    assert "call budget spent" not in result.stop_reason
    assert result.best_test is not None  # the held-out evaluation is never cut short
    assert result.best_dev["n"] == len(toy_task.dev)  # the best comes from a complete dev evaluation


@pytest.mark.parametrize("max_calls", [12, 33])
def test_call_budget_below_the_optimizers_minimum_is_refused_up_front(toy_task, max_calls):
    with pytest.raises(ConfigError, match="--budget-calls 34"):
        run_ape(toy_task, budget=Budget(max_calls=max_calls))


def test_budget_that_cannot_score_the_seed(toy_task):
    with pytest.raises(BudgetExhausted, match="does not cover scoring the seed prompt"):
        optimize(toy_task, "baseline", toy_model(), budget=Budget(max_calls=5), cache=False)


def test_cache_hits_are_free(toy_task):
    cache = promptopt.ResponseCache(":memory:")
    first, _, _ = run_ape(toy_task, cache=cache)
    spent = first.usage["total"]["calls"]
    # the same run again (same budget: optimizers plan as if the cache were cold) pays nothing: all from the cache
    again, model, proposer = run_ape(toy_task, cache=cache)
    assert model.requests == [] and proposer.requests == []
    assert again.usage["total"]["calls"] == 0
    assert again.usage["total"]["cache_hits"] > 0
    assert again.best_prompt.id == first.best_prompt.id
    assert spent > 1


# -- run directory ----------------------------------------------------------------------------------------


def test_run_dir_contents(toy_task, tmp_run_dir):
    result, _, _ = run_ape(toy_task, run_dir=tmp_run_dir, budget=Budget(max_calls=500))
    files = {p.name for p in tmp_run_dir.iterdir()}
    assert {"config.json", "history.jsonl", "usage.json", "result.json", "test_results.json", "best_prompt"} <= files

    config = json.loads((tmp_run_dir / "config.json").read_text())
    assert config["optimizer"] == "ape"
    assert config["optimizer_config"]["n_prompts"] == 4
    assert (config["model"], config["proposer"], config["seed"]) == ("fake:toy", "fake:proposer", 0)
    assert config["budget"]["max_calls"] == 500

    lines = (tmp_run_dir / "history.jsonl").read_text().splitlines()
    assert len(lines) == result.n_trials
    assert json.loads(lines[0])["prompt"]["id"] == result.seed_prompt.id

    usage = json.loads((tmp_run_dir / "usage.json").read_text())
    assert usage["total"] == result.usage["total"]

    assert OptimizationResult.load(tmp_run_dir) == OptimizationResult.load(tmp_run_dir / "result.json")
    loaded = OptimizationResult.load(tmp_run_dir)
    assert loaded.best_prompt.id == result.best_prompt.id
    assert loaded.to_dict() == json.loads(json.dumps(result.to_dict()))

    export = tmp_run_dir / "best_prompt"
    assert {p.name for p in export.iterdir()} >= {"manifest.json", "template.jinja", "demos.json", "README.md"}
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["instruction"] == TOY_BEST_INSTRUCTION
    assert manifest["task"] == "toy"
    assert manifest["test"]["mean"] == 1.0
    assert Prompt.load(tmp_run_dir) == result.best_prompt


def test_non_empty_run_dir_without_resume(toy_task, tmp_run_dir):
    tmp_run_dir.mkdir()
    (tmp_run_dir / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="run directory is not empty"):
        optimize(toy_task, "baseline", toy_model(), run_dir=tmp_run_dir, cache=False)
    assert (tmp_run_dir / "notes.txt").read_text() == "mine"


def test_empty_existing_run_dir_is_fine(toy_task, tmp_run_dir):
    tmp_run_dir.mkdir()
    optimize(toy_task, "baseline", toy_model(), run_dir=tmp_run_dir, cache=False)
    assert (tmp_run_dir / "result.json").is_file()


# -- resume ---------------------------------------------------------------------------------------------


class Interrupt:
    """A callback that raises KeyboardInterrupt (like Ctrl-C) at the n-th event of a kind that matches."""

    def __init__(self, kind: type, n: int = 1, when=lambda event: True) -> None:
        self.kind, self.n, self.when, self.seen = kind, n, when, 0

    def __call__(self, event) -> None:
        if isinstance(event, self.kind) and self.when(event):
            self.seen += 1
            if self.seen == self.n:
                raise KeyboardInterrupt


def partway(label: str):
    """Events of the evaluation ``label`` that still has examples to go."""
    return lambda e: e.label == label and e.done < e.total


def run_toy(task_path, run_dir, cache, *, callbacks: Sequence = (), resume: bool = False, seed: int = 0):
    model, proposer = toy_model(), scripted_proposer(SCRIPT)
    try:
        result = optimize(
            task_path,
            ape(),
            model,
            proposer=proposer,
            run_dir=run_dir,
            cache=cache,
            callbacks=callbacks,
            batch_size=4,
            resume=resume,
            seed=seed,
        )
    except KeyboardInterrupt:
        result = None
    return result, model, proposer


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run of the toy task: result, task model, proposer, history."""
    tmp = tmp_path_factory.mktemp("reference")
    ref, model, proposer = run_toy(write_toy_task(tmp / "toy"), tmp / "run", ":memory:")
    return ref, model, proposer, promptopt.run.history.History.load(tmp / "run" / "history.jsonl")


@pytest.mark.parametrize(
    "interrupt",
    [
        pytest.param(lambda: Interrupt(TrialFinished, 5), id="after-trial-4"),
        pytest.param(lambda: Interrupt(EvaluationProgress, when=partway("trial 4")), id="mid-evaluation"),
        pytest.param(lambda: Interrupt(TrialFinished, 12), id="after-last-trial"),
        pytest.param(lambda: Interrupt(EvaluationProgress, when=partway("test: best prompt")), id="mid-test"),
    ],
)
def test_resume_after_interrupt_redoes_no_finished_work(tmp_path, interrupt, reference):
    task_path = write_toy_task(tmp_path / "toy")
    ref, ref_model, ref_prop, ref_history = reference

    run_dir, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    stopped, m1, p1 = run_toy(task_path, run_dir, cache, callbacks=[interrupt()])
    assert stopped is None
    assert not (run_dir / "result.json").exists()
    done_before = len(m1.requests) + len(p1.requests)
    assert 0 < done_before < len(ref_model.requests) + len(ref_prop.requests)
    assert json.loads((run_dir / "usage.json").read_text())["total"]["calls"] == done_before
    recorded_before = len((run_dir / "history.jsonl").read_text().splitlines())

    resumed, m2, p2 = run_toy(task_path, run_dir, cache, resume=True)
    assert resumed is not None
    # nothing answered before the interruption is asked again ...
    assert not set(keys(m1)) & set(keys(m2))
    assert not set(keys(p1)) & set(keys(p2))
    # ... and together the two halves made exactly the calls of an uninterrupted run
    assert sorted(keys(m1) + keys(m2)) == sorted(keys(ref_model))
    assert sorted(keys(p1) + keys(p2)) == sorted(keys(ref_prop))
    assert resumed.usage["total"]["calls"] == ref.usage["total"]["calls"]

    assert resumed.best_prompt == ref.best_prompt
    assert resumed.best_prompt.instruction == TOY_BEST_INSTRUCTION
    for a, b in ((resumed.best_dev, ref.best_dev), (resumed.best_test, ref.best_test)):
        assert {**a, "calls": None} == {**b, "calls": None}  # 'calls' is what this evaluation paid
    history = promptopt.run.history.History.load(run_dir / "history.jsonl")
    assert essence(history) == essence(ref_history)
    # the replayed part keeps what it cost the first time, so spend-vs-score curves survive a resume
    assert [r.calls_so_far for r in history] == [r.calls_so_far for r in ref_history]
    n = recorded_before
    assert [r.result.calls for r in history[:n]] == [r.result.calls for r in ref_history[:n]]
    elapsed = [r.elapsed for r in history]
    assert elapsed == sorted(elapsed)
    assert (run_dir / "result.json").is_file()


def test_resume_with_different_settings_is_refused(tmp_path):
    task_path = write_toy_task(tmp_path / "toy")
    run_dir, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    run_toy(task_path, run_dir, cache, callbacks=[Interrupt(TrialFinished, 3)])
    with pytest.raises(ConfigError, match=r"cannot resume with different settings \(seed\)"):
        run_toy(task_path, run_dir, cache, resume=True, seed=1)
    with pytest.raises(ConfigError, match=r"different settings \(optimizer_config\)"):
        optimize(
            task_path,
            load_optimizer("ape", n_prompts=5),
            toy_model(),
            proposer=scripted_proposer(SCRIPT),
            run_dir=run_dir,
            cache=cache,
            resume=True,
        )
    with pytest.raises(ConfigError, match="run directory is not empty"):
        run_toy(task_path, run_dir, cache)


def test_resume_needs_a_run_directory(tmp_path, toy_task):
    with pytest.raises(ConfigError, match=r"no config\.json"):
        promptopt.resume(tmp_path)
    with pytest.raises(ConfigError, match=r"cannot resume: no config\.json"):
        optimize(toy_task, "baseline", toy_model(), run_dir=tmp_path / "fresh", resume=True, cache=False)
    with pytest.raises(ConfigError, match="run_dir"):
        optimize(toy_task, "baseline", toy_model(), resume=True, cache=False)


def test_resume_drops_a_torn_last_history_line(tmp_path, reference, caplog):
    """kill -9 in the middle of writing a trial record: the torn line is dropped with a warning (that trial runs
    again, from the cache), the file is repaired, and the result is the uninterrupted run's."""
    ref = reference[0]
    task_path = write_toy_task(tmp_path / "toy")
    run_dir, cache = tmp_path / "run", tmp_path / "cache.sqlite"
    run_toy(task_path, run_dir, cache, callbacks=[Interrupt(TrialFinished, 5)])
    history = run_dir / "history.jsonl"
    lines = history.read_text().splitlines()
    history.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # no newline: torn
    resumed, _, _ = run_toy(task_path, run_dir, cache, resume=True)
    assert "dropped the unreadable last line" in caplog.text
    assert resumed is not None and resumed.best_prompt == ref.best_prompt
    assert all(json.loads(line) for line in history.read_text().splitlines())
    assert len(promptopt.run.history.History.load(history)) == ref.n_trials


@pytest.mark.parametrize(
    ("name", "damage", "match"),
    [
        ("history.jsonl", lambda text: "{not json\n" + text, r"history\.jsonl: line 1 is not a trial record"),
        ("config.json", lambda text: text[:20], r"config\.json: not valid JSON"),
        ("config.json", lambda text: "{}", r"config\.json: field 'task': missing"),
        ("usage.json", lambda text: "[", r"usage\.json: the run's saved usage is damaged"),
    ],
)
def test_a_damaged_run_directory_is_refused_naming_the_file(tmp_path, name, damage, match):
    task_path = write_toy_task(tmp_path / "toy")
    run_dir = tmp_path / "run"
    optimize(task_path, "baseline", "fake:echo", run_dir=run_dir, cache=tmp_path / "c.sqlite")
    (run_dir / name).write_text(damage((run_dir / name).read_text()))
    with pytest.raises(ConfigError, match=match):
        promptopt.resume(run_dir)


def test_resume_of_tuple_settings_and_a_preset_named_like_the_optimizer(tmp_path):
    """List settings come back as the Config's tuples; the saved config is rebuilt from the registered optimizer,
    not from the preset of the same name."""
    task_path = write_toy_task(tmp_path / "toy")
    run_dir = tmp_path / "run"
    opt = load_optimizer("fewshot", shots=[2], selections=["random"], demo_formats=["inline"])
    assert opt.config.shots == (2,)
    first = optimize(
        task_path, opt, "fake:echo", run_dir=run_dir, cache=tmp_path / "c.sqlite", budget=Budget(max_calls=60)
    )
    again = promptopt.resume(run_dir)
    assert again.best_prompt == first.best_prompt and again.optimizer_config == first.optimizer_config


def test_unwritable_places_are_refused(tmp_path, toy_task):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match=r"field 'run_dir': cannot write the run directory \(Not a directory"):
        optimize(toy_task, "baseline", toy_model(), run_dir=tmp_path / "file" / "run", cache=False)
    with pytest.raises(ConfigError, match="a file is in the run directory's place"):
        optimize(toy_task, "baseline", toy_model(), run_dir=tmp_path / "file", cache=False)
    with pytest.raises(ConfigError, match=r"field 'cache': .* is a directory; give the cache a file path"):
        optimize(toy_task, "baseline", toy_model(), cache=tmp_path)
    with pytest.raises(ConfigError, match=r"field 'cache': cannot use .*file.*not a database"):
        (tmp_path / "bad.sqlite").write_text("x" * 200)
        optimize(toy_task, "baseline", toy_model(), cache=tmp_path / "bad.sqlite")


def test_mode_is_checked(toy_task):
    with pytest.raises(ConfigError, match="field 'mode': unknown mode 'guess'"):
        optimize(toy_task, "baseline", toy_model(), cache=False, mode="guess")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="has no labels, and label scoring needs them"):
        promptopt.evaluate(toy_task, toy_model(), cache=False, mode="score")


def test_resume_function_with_a_model_spec(tmp_path):
    task_path = write_toy_task(tmp_path / "toy")
    ref = optimize(task_path, "ape-fast", "fake:echo", run_dir=tmp_path / "ref", cache=tmp_path / "ref.sqlite")

    run_dir = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        optimize(
            task_path,
            "ape-fast",
            "fake:echo",
            run_dir=run_dir,
            cache=tmp_path / "cache.sqlite",
            callbacks=[Interrupt(TrialFinished, 2)],
        )
    spent = json.loads((run_dir / "usage.json").read_text())["total"]["calls"]
    assert 0 < spent < ref.usage["total"]["calls"]

    resumed = promptopt.resume(run_dir)
    assert resumed.best_prompt == ref.best_prompt
    assert resumed.n_trials == ref.n_trials
    assert resumed.usage["total"]["calls"] == ref.usage["total"]["calls"]
    assert resumed.usage["total"]["cache_hits"] > ref.usage["total"]["cache_hits"]
    assert OptimizationResult.load(run_dir).best_prompt == ref.best_prompt


def test_resume_function_refuses_python_built_tasks(toy_task, tmp_run_dir):
    optimize(toy_task, "baseline", toy_model(), run_dir=tmp_run_dir, cache=False)
    with pytest.raises(ConfigError, match=r"built in Python; resume it with optimize\(\.\.\., resume=True\)"):
        promptopt.resume(tmp_run_dir)


# -- callbacks ------------------------------------------------------------------------------------------


def test_callback_events(toy_task):
    events = []
    result = optimize(
        toy_task,
        ape(),
        toy_model(),
        proposer=scripted_proposer(SCRIPT),
        cache=False,
        callbacks=[events.append],
    )
    assert isinstance(events[0], RunStarted)
    assert events[0].config["optimizer"] == "ape"
    assert isinstance(events[-1], RunFinished) and events[-1].result is result
    trials = [e.record.trial for e in events if isinstance(e, TrialFinished)]
    assert trials == list(range(result.n_trials))
    progress = [e for e in events if isinstance(e, EvaluationProgress)]
    assert all(0 < e.done <= e.total for e in progress)
    assert {e.label for e in progress} >= {"trial 0", "trial 11", "test: seed prompt", "test: best prompt"}


def test_callback_can_stop_the_run(toy_task):
    def stop_after_first_full_candidate(event):
        if isinstance(event, TrialFinished) and event.record.full and event.record.trial > 0:
            event.state.request_stop("good enough")

    result, _, _ = run_ape(toy_task, callbacks=[stop_after_first_full_candidate])
    assert result.stop_reason == "good enough"
    assert result.n_trials == 5  # seed, 3 minibatch screens, then the first promoted candidate: it stops there


class BrokenTemplateOptimizer(Optimizer):
    """Proposes one prompt whose template needs a variable the data lacks, then a good one."""

    name = "broken_template_test"

    def propose(self, state):
        if state.step > 1:
            return []
        seed = state.seed_record.prompt
        broken = Prompt(instruction="x", template="{{ instruction }} {{ nope }}", system=seed.system, origin="t")
        return [broken, seed.with_instruction(TOY_BEST_INSTRUCTION, origin="t")]


def test_a_prompt_that_does_not_render_is_a_failed_trial_not_a_crash(toy_task):
    result = optimize(toy_task, BrokenTemplateOptimizer(), toy_model(), cache=False, evaluate_test=False)
    assert result.n_trials == 3
    assert result.best_prompt.instruction == TOY_BEST_INSTRUCTION


def test_failed_trial_is_recorded(toy_task, tmp_run_dir):
    optimize(toy_task, BrokenTemplateOptimizer(), toy_model(), cache=False, evaluate_test=False, run_dir=tmp_run_dir)
    failed = [r for r in promptopt.run.history.History.load(tmp_run_dir / "history.jsonl") if r.status == "failed"]
    assert len(failed) == 1
    assert "'nope' is undefined" in failed[0].error
    assert failed[0].result is None


# -- selection: guard against the winner's curse ----------------------------------------------------------


def _one_candidate_run(n_dev: int, select: str, **kwargs) -> OptimizationResult:
    from promptopt.testing import make_toy_task

    opt = load_optimizer("ape", n_prompts=1, minibatch_size=n_dev, top_k=1, resample_rounds=0)
    task = make_toy_task(n_train=4, n_dev=n_dev, n_test=4)
    proposer = scripted_proposer([TOY_PARTIAL_INSTRUCTION] * 5)
    return optimize(task, opt, toy_model(), proposer=proposer, cache=False, select=select, **kwargs)


def test_select_significant_keeps_the_seed_when_the_dev_gain_is_noise() -> None:
    best = _one_candidate_run(4, "best")
    assert best.best_prompt.instruction == TOY_PARTIAL_INSTRUCTION and best.selection == "best dev score"
    kept = _one_candidate_run(4, "significant")
    assert kept.best_prompt.instruction == TOY_SEED_INSTRUCTION and not kept.improved
    assert kept.dev_comparison is not None and kept.dev_comparison["ci_low"] <= 0 < kept.dev_comparison["diff"]
    assert kept.selection.startswith("seed prompt kept") and kept.selection in kept.format()


def test_select_significant_accepts_a_clear_gain(tmp_run_dir) -> None:
    result = _one_candidate_run(24, "significant", run_dir=tmp_run_dir)
    assert result.best_prompt.instruction == TOY_PARTIAL_INSTRUCTION and result.dev_comparison["ci_low"] > 0
    assert json.loads((tmp_run_dir / "config.json").read_text())["select"] == "significant"
    assert OptimizationResult.load(tmp_run_dir).selection == "best dev score"


def test_unknown_selection_is_refused(toy_task) -> None:
    with pytest.raises(ConfigError, match="select"):
        optimize(toy_task, "baseline", toy_model(), select="luck")  # type: ignore[arg-type]
