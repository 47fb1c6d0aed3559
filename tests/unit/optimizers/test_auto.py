"""auto: demos first, then a soft prompt for trainable models or instruction search on the winner."""

from __future__ import annotations

from tests.unit.optimizers.test_fewshot import query_word, turns_model
from tests.unit.optimizers.test_pe2 import compact_editor

import promptopt
from promptopt import Budget
from promptopt.models.base import GenerationRequest
from promptopt.models.fake import FakeModel, last_user
from promptopt.optimizers.auto import AutoOptimizer
from promptopt.testing import TOY_PARTIAL_INSTRUCTION, make_toy_task, scripted_proposer


def half_turns_model() -> FakeModel:
    """With >= 2 demos as chat turns it reverses words of up to 5 letters; longer ones only when the instruction
    says "Reverse"."""

    def fn(request: GenerationRequest) -> str:
        word = query_word(request)
        turns = sum(m.role == "assistant" for m in request.messages)
        spelled = len(word) <= 5 or "Reverse" in last_user(request.messages)
        return word[::-1] if turns >= 2 and spelled else word

    return FakeModel(fn=fn, name="fake:half-turns")


def test_auto_runs_demos_then_instruction_search_and_explains_what_it_skipped():
    task = make_toy_task(n_train=10, n_dev=12, n_test=10)
    result = promptopt.optimize(
        task, AutoOptimizer(), half_turns_model(), proposer=compact_editor(), budget=Budget(max_calls=300), cache=False
    )
    assert result.best_prompt.demo_format == "turns" and result.best_test["mean"] == 1.0
    assert result.best_prompt.instruction == TOY_PARTIAL_INSTRUCTION
    notes = "\n".join(result.notes)
    assert "demonstrations: fewshot with up to 216 of 288 calls left" in notes  # 75% of what the seed left
    assert "fewshot ended" in notes
    assert "instruction search on the best prompt: pe2 with up to" in notes
    assert "auto: demonstrations" in result.format()


def test_auto_stops_when_a_stage_leaves_nothing_to_gain_on_dev():
    task = make_toy_task(n_train=10, n_dev=12, n_test=10)
    proposer = scripted_proposer(["New instruction: Reverse the word, letter by letter."])
    result = promptopt.optimize(
        task, AutoOptimizer(), turns_model(), proposer=proposer, budget=Budget(max_calls=300), cache=False
    )
    assert result.best_dev["mean"] == 1.0 and "instruction search" not in "\n".join(result.notes)
    assert result.stop_reason == "finished (nothing left to gain on dev)"
    assert result.usage["by_role"].get("proposer", {}).get("calls", 0) == 0


def test_auto_stages_stay_within_their_share_and_the_run_within_its_budget():
    task = make_toy_task(n_train=10, n_dev=12, n_test=10)
    result = promptopt.optimize(
        task,
        AutoOptimizer(instruction_search=""),
        turns_model(),
        budget=Budget(max_calls=100),
        cache=promptopt.ResponseCache(":memory:"),
    )
    assert result.usage["by_role"]["task"]["calls"] <= 100
    assert result.search["confirmed"] >= 1
    assert "soft prompt skipped: the task model 'fake:turns' cannot be trained in process" in "\n".join(result.notes)


def test_auto_is_the_cli_default_optimizer():
    import inspect

    from promptopt.cli.app import optimize

    assert inspect.signature(optimize).parameters["optimizer"].default == "auto"


def test_auto_skips_a_soft_prompt_the_budget_cannot_train_and_gives_the_search_the_rest():
    from promptopt.models.base import Capabilities

    class TrainableLooking(type(turns_model())):
        @property
        def capabilities(self) -> Capabilities:
            return Capabilities(score=True, trainable=True)

    model = TrainableLooking(fn=half_turns_model()._fn, name="fake:trainable")
    task = make_toy_task(n_train=10, n_dev=12, n_test=10)
    result = promptopt.optimize(
        task,
        AutoOptimizer(),
        model,
        proposer=scripted_proposer(["New instruction: Repeat the word."]),
        budget=Budget(max_calls=160),
        cache=False,
    )
    notes = "\n".join(result.notes)
    # 148 calls are left after the seed: 2 checkpoints of 8 steps x 8 examples + 12 dev need 152
    assert "soft prompt skipped: 2 checkpoints (152 calls) leave the demonstrations less than their minimum" in notes
    assert "demonstrations: fewshot with up to 111 of 148 calls left" in notes
    assert "instruction search on the best prompt: pe2" in notes


def test_auto_trains_its_soft_prompt_under_the_seed_unless_the_best_is_significantly_better():
    import dataclasses

    from promptopt.evaluation.evaluator import Evaluator
    from promptopt.models.budget import BudgetTracker
    from promptopt.models.fake import FakeModel
    from promptopt.optimizers.soft_prompt import SoftPromptOptimizer
    from promptopt.run.context import RunState
    from promptopt.run.history import History, TrialRecord

    task = make_toy_task(n_train=4, n_dev=16, n_test=4)
    right = {ex.inputs["word"]: ex.target for ex in task.dev}

    def answer(request):  # "always" answers every word right, "often" 9 of 16, the seed 8 of 16
        text = request.messages[-1].content
        word = text.rsplit("Word: ", 1)[-1].split("\n")[0]
        share = 16 if "always" in text else 9 if "often" in text else 8
        good = {ex.inputs["word"] for ex in task.dev[:share]}
        return right[word] if word in good else "?"

    client = promptopt.ModelClient(FakeModel(fn=answer), cache=None, budget=BudgetTracker())
    evaluator = Evaluator(task, client)
    seed = task.seed_prompt()

    def record(i: int, instruction: str | None) -> TrialRecord:
        prompt = seed if instruction is None else dataclasses.replace(seed, instruction=instruction)
        return TrialRecord(trial=i, step=i, prompt=prompt, result=evaluator.evaluate(prompt, split="dev"))

    for instruction, expected in (("often", None), ("always", "always")):
        history = History(None)
        seed_record = record(0, None)
        history.append(seed_record)
        history.append(record(1, instruction))
        optimizer = SoftPromptOptimizer(start_from="significant")
        start = optimizer._start_prompt(RunState(history=history, seed_record=seed_record))
        assert start.instruction == (expected or seed.instruction)
        assert ("under the seed prompt" in optimizer.notes[0]) == (expected is None)
