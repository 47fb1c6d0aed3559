"""Racing: stage sizes, the sign test, elimination against the leader and incumbents, calls saved, and the
search optimizers (pe2/apo/opro via the shared beam search, ape) racing on growing minibatches."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from promptopt import Example
from promptopt.core.candidate import Prompt
from promptopt.core.exceptions import ConfigError
from promptopt.evaluation.evaluator import EvalResult, ExampleRecord
from promptopt.optimizers.ape import APEConfig, APEOptimizer
from promptopt.optimizers.pe2 import PE2Optimizer
from promptopt.optimizers.racing import Race, RacingConfig, sign_test, stage_sizes
from promptopt.testing import make_toy_task

EXAMPLES = [Example(id=f"e{i}", inputs={"x": str(i)}, target="y") for i in range(40)]


def prompt(name: str) -> Prompt:
    return Prompt(instruction=name, template="{{ instruction }} {{ x }}")


def result(p: Prompt, examples: tuple[Example, ...], score: Callable[[int], float]) -> EvalResult:
    records = [ExampleRecord(example_id=ex.id, prediction="y", score=score(int(ex.inputs["x"]))) for ex in examples]
    return EvalResult(prompt_id=p.id, split="dev-race", mode="generate", records=tuple(records))


def drive(race: Race, skill: dict[str, Callable[[int], float]]) -> list[list[str]]:
    """Run the race to the end; returns the instructions scored at each stage."""
    stages = []
    while requests := race.requests():
        stages.append([q.prompt.instruction for q in requests])
        for q in requests:
            race.record(q.prompt, result(q.prompt, q.examples, skill[q.prompt.instruction]))
    return stages


def test_sign_test() -> None:
    assert sign_test(0, 0) == 1.0
    assert sign_test(5, 0) == pytest.approx(1 / 32)
    assert sign_test(4, 1) == pytest.approx(6 / 32)
    assert sign_test(0, 3) == 1.0


def test_stage_sizes() -> None:
    assert stage_sizes(10, 100, stages=3, growth=2) == [10, 20, 40]
    assert stage_sizes(10, 30, stages=3, growth=2) == [10, 20]  # every stage is smaller than the dev split
    assert stage_sizes(6, 12, stages=3, growth=2) == [6]
    assert stage_sizes(12, 12, stages=3, growth=2) == []  # nothing to race on
    assert stage_sizes(2, 100, stages=4, growth=1.2) == [2, 3, 4, 5]  # 2.4 rounds to 2: skipped


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match="race_growth"):
        RacingConfig(race_growth=1.0)
    with pytest.raises(ConfigError, match="race_alpha"):
        RacingConfig(race_alpha=1.0)
    with pytest.raises(ConfigError, match="race_stages"):
        RacingConfig(race_stages=0)


def test_weak_candidates_drop_out_and_the_saving_is_counted() -> None:
    good, weak, close = prompt("good"), prompt("weak"), prompt("close")
    skill = {"good": lambda i: 1.0, "weak": lambda i: float(i % 4 == 0), "close": lambda i: float(i % 10 != 3)}
    race = Race([good, weak, close], EXAMPLES, [10, 20, 40])
    stages = drive(race, skill)
    assert stages == [["good", "weak", "close"], ["good", "close"], ["good", "close"]]
    assert [p.instruction for p, _ in race.ranking()] == ["good", "close"]
    assert race.ranking()[0][1] == 1.0
    assert race.dropped == {weak.id: 10}
    assert race.evaluations == 10 + 40 + 40
    assert race.saved == 30  # the weak one skipped 30 of the 40 examples
    assert race.summary()["dropped"] == 1 and race.done


def test_nobody_is_dropped_after_the_last_stage_or_with_alpha_zero() -> None:
    skill = {"good": lambda i: 1.0, "weak": lambda i: 0.0}
    single = Race([prompt("good"), prompt("weak")], EXAMPLES, [20])
    drive(single, skill)
    assert len(single.ranking()) == 2 and single.saved == 0
    never = Race([prompt("good"), prompt("weak")], EXAMPLES, [10, 20], alpha=0.0)
    drive(never, skill)
    assert len(never.ranking()) == 2


def test_incumbents_lead_for_free_and_a_failed_candidate_leaves() -> None:
    parent = {ex.id: 1.0 for ex in EXAMPLES}
    kids = [prompt("worse"), prompt("broken"), prompt("equal")]
    race = Race(kids, EXAMPLES, [10, 20], incumbents={"parent": parent})
    first = race.requests()
    assert [q.prompt.instruction for q in first] == ["worse", "broken", "equal"]  # the parent is never scored
    race.record(kids[0], result(kids[0], first[0].examples, lambda i: 0.0))
    race.record(kids[1], None)  # did not render
    race.record(kids[2], result(kids[2], first[2].examples, lambda i: 1.0))
    second = race.requests()
    assert [q.prompt.instruction for q in second] == ["equal"]  # 'worse' lost 10-0 to the parent
    assert [ex.id for ex in second[0].examples] == [ex.id for ex in EXAMPLES[10:20]]
    assert race.failed == {kids[1].id}


def test_race_ends_when_every_candidate_lost_to_an_incumbent() -> None:
    race = Race([prompt("a"), prompt("b")], EXAMPLES, [10, 20, 40], incumbents={"p": {e.id: 1.0 for e in EXAMPLES}})
    assert drive(race, {"a": lambda i: 0.0, "b": lambda i: 0.0}) == [["a", "b"]]
    assert race.done and race.ranking() == [] and race.saved == 60


def test_race_through_an_evaluator(clf_task) -> None:
    from promptopt.evaluation.evaluator import Evaluator
    from promptopt.models.budget import BudgetTracker
    from promptopt.models.client import ModelClient
    from promptopt.models.fake import FakeModel, last_user
    from promptopt.optimizers.racing import race

    def fn(request) -> str:  # 'good' prompts answer right, 'bad' ones always say 'positive'
        user = last_user(request.messages)
        if user.startswith("bad"):
            return "positive"
        return "positive" if any(w in user for w in ("wonderful", "loved", "brilliant", "charming")) else "negative"

    examples = [
        Example(id=f"d{i}-{ex.id}", inputs=ex.inputs, target=ex.target) for i in range(5) for ex in clf_task.dev
    ]
    tracker = BudgetTracker()
    evaluator = Evaluator(clf_task, ModelClient(FakeModel(fn=fn), cache=None, budget=tracker), mode="generate")
    seed = clf_task.seed_prompt()
    good, bad = seed.with_instruction("good", origin="test"), seed.with_instruction("bad", origin="test")
    out = race(evaluator, [bad, good], examples, first=8, alpha=0.05)
    assert [p.instruction for p, _ in out.ranking] == ["good"]
    assert out.summary["saved"] == len(examples) - out.summary["evaluations"] + len(examples)
    assert tracker.total.calls <= out.summary["evaluations"]  # (repeated inputs are asked once)
    assert out.summary["saved"] > 0


def test_beam_search_races_children_on_growing_minibatches() -> None:
    import promptopt
    from promptopt.models.budget import Budget
    from promptopt.testing import TOY_BEST_INSTRUCTION, TOY_PARTIAL_INSTRUCTION, scripted_proposer, toy_model

    replies = ["Say nothing at all.", TOY_PARTIAL_INSTRUCTION, "Write the word twice.", TOY_BEST_INSTRUCTION]
    opt = PE2Optimizer(minibatch_size=4, race_stages=3, race_alpha=0.2, n_steps=2, min_gain=None)
    res = promptopt.optimize(
        make_toy_task(n_train=4, n_dev=24, n_test=2),
        opt,
        toy_model(),
        proposer=scripted_proposer(replies * 20),
        budget=Budget(max_calls=1500),
        cache=False,
        evaluate_test=False,
    )
    assert opt.racing.races >= 1 and opt.racing.raced >= 2
    assert opt.racing.dropped >= 1 and opt.racing.saved > 0
    assert res.best_dev["mean"] > res.baseline_dev["mean"]


def test_ape_races_and_single_stage_keeps_one_fixed_minibatch() -> None:
    import promptopt
    from promptopt.models.budget import Budget
    from promptopt.testing import TOY_BEST_INSTRUCTION, TOY_PARTIAL_INSTRUCTION, scripted_proposer, toy_model

    task = make_toy_task(n_train=4, n_dev=24, n_test=2)
    proposals = [TOY_BEST_INSTRUCTION, "Say nothing at all.", TOY_PARTIAL_INSTRUCTION, "Write the word twice."]

    def go(**overrides) -> tuple[APEOptimizer, promptopt.OptimizationResult]:
        opt = APEOptimizer(APEConfig(n_prompts=4, minibatch_size=5, resample_rounds=0, top_k=2, **overrides))
        res = promptopt.optimize(
            task,
            opt,
            toy_model(),
            proposer=scripted_proposer(proposals * 5),
            budget=Budget(max_calls=800),
            cache=False,
            evaluate_test=False,
        )
        return opt, res

    raced, raced_result = go(race_alpha=0.2)
    assert raced.sizes == [5, 10, 20] and raced.racing.dropped >= 1 and raced.racing.saved > 0
    assert raced_result.best_prompt.instruction == TOY_BEST_INSTRUCTION
    assert raced_result.racing["saved"] == raced.racing.saved > 0  # reported in the result
    assert "evaluations saved" in raced_result.format()
    fixed, _ = go(race_stages=1)
    assert fixed.sizes == [5] and fixed.racing.dropped == 0 and fixed.racing.saved == 0
