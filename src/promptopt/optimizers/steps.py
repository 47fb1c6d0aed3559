"""Evaluating from ``run(ctx)``: one call, one step of recorded trials; a callback's stop ends the run right after it.

:meth:`RunContext.evaluate_all <promptopt.run.context.RunContext.evaluate_all>` raises
:class:`~promptopt.run.context.StopRun` at the next evaluation once a callback asked to stop. These helpers stop
at the end of the step instead, before the optimizer spends anything more (a proposer call, a rendered
meta-prompt): where the ask/tell loop checks too, so both styles stop after the same calls.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from promptopt.optimizers.racing import race_trials
from promptopt.run.context import StopRun

if TYPE_CHECKING:
    from promptopt.core.candidate import Prompt
    from promptopt.optimizers.racing import Race
    from promptopt.run.context import EvalRequest, RunContext
    from promptopt.run.history import TrialRecord


def stop_if_asked(ctx: RunContext) -> None:
    """Raise :class:`StopRun` if a callback asked the run to stop."""
    if ctx.state.stop_requested:
        raise StopRun(ctx.state.stop_reason or "stopped")


def evaluate_step(ctx: RunContext, items: Sequence[Prompt | EvalRequest]) -> list[TrialRecord]:
    """Score ``items`` as one step (:meth:`RunContext.evaluate_all`), then stop if a callback asked to."""
    records = ctx.evaluate_all(items)
    stop_if_asked(ctx)
    return records


def race_step(ctx: RunContext, race: Race) -> Race:
    """Run ``race`` to the end (:func:`~promptopt.optimizers.racing.race_trials`: a step per stage), then stop if a
    callback asked to."""
    race_trials(ctx, race)
    stop_if_asked(ctx)
    return race


def next_step(ctx: RunContext) -> int:
    """The step the next evaluation is recorded in: what candidates proposed now carry as ``meta["step"]``."""
    return ctx.state.step + 1
