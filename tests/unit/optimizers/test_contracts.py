"""The optimizer contract (promptopt.testing.contracts) for every registered optimizer: seeded determinism, the call
budget, resume, history records, export. A newly registered optimizer is tested by registering it: it gets
``contract_cases.default_case``'s generic toy setting until it is given its own there."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import promptopt
from promptopt.optimizers import Optimizer
from promptopt.run.context import RunContext, RunState
from promptopt.testing import contract_cases, contracts, make_toy_task, toy_model

EXTRA_CASES = ("auto-trainable", "dspy-mipro")
"""Cases beyond one per registered optimizer: ``auto`` on a trainable model, so that its soft-prompt stage runs;
``dspy`` with MIPROv2 (proposer calls, sampled requests), beyond its default LabeledFewShot."""
CASES = (*promptopt.OPTIMIZERS.names(), *EXTRA_CASES)
XFAIL: dict[tuple[str, str], str] = {}
"""(case, check) pairs an optimizer fails today, with the reason; strict, so a fix shows up as XPASS."""

Reference = tuple[contracts.ContractCase, Path, contracts.ContractRun]


def params() -> Iterator[Any]:
    for name in CASES:
        for check in contracts.CHECKS:
            reason = XFAIL.get((name, check))
            marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
            yield pytest.param(name, check, id=f"{name}-{check}", marks=marks)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Reference]:
    """Per case: its setting, its work directory and one uninterrupted run that its checks share."""
    root = tmp_path_factory.mktemp("contracts")
    done: dict[str, Reference] = {}

    def get(name: str) -> Reference:
        if name not in done:
            case = contract_cases.default_case(name, root / "cases")
            for module in case.requires:
                pytest.importorskip(module)
            done[name] = case, root / name, contracts.reference_run(case, root / name)
        return done[name]

    return get


@pytest.mark.parametrize(("name", "check"), list(params()))
def test_contract(name: str, check: str, reference: Callable[[str], Reference]) -> None:
    case, workdir, run = reference(name)
    contracts.CHECKS[check](case, workdir, run)


class Forgetful(Optimizer):
    """Proposes one instruction that depends on how many runs this process made, not on the run's seed."""

    name = "forgetful"
    runs = 0

    def setup(self, ctx: RunContext) -> None:
        super().setup(ctx)
        Forgetful.runs += 1

    def propose(self, state: RunState) -> list[promptopt.Prompt]:
        instruction = f"Reverse the word (run {Forgetful.runs})."
        return [state.seed_record.prompt.with_instruction(instruction, origin="forgetful")] if state.step == 1 else []


def test_the_checks_catch_an_optimizer_that_breaks_the_contract(tmp_path: Path) -> None:
    """The suite on an optimizer instance and a Python-built task: determinism and resume fail naming the case."""
    case = contracts.ContractCase(optimizer=Forgetful(), model=toy_model, task=make_toy_task())
    reference = contracts.reference_run(case, tmp_path)
    for check in ("budget", "history", "export"):
        contracts.CHECKS[check](case, tmp_path, reference)
    with pytest.raises(AssertionError, match="forgetful: two runs with seed 0 and fresh caches chose different best"):
        contracts.check_determinism(case, tmp_path, reference)
    with pytest.raises(AssertionError, match="forgetful: stopped after trial 0 and resumed, the run chose"):
        contracts.check_resume(case, tmp_path, reference)
