"""The optimization loop: the seed prompt's dev score, the optimizer's trials, selection, the test score.

Resume is deterministic replay: every model response is in the response cache and every random choice
comes from the run seed, so re-running a run's saved configuration reproduces the finished part for
free (cache hits cost nothing) and continues with the budget it had left.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Literal, get_args

from promptopt.core.candidate import Prompt
from promptopt.core.exceptions import BudgetExhausted, TemplateError, TooManyErrors
from promptopt.core.task import Task
from promptopt.evaluation.evaluator import EvalResult, Evaluator, Mode, compare
from promptopt.models.client import ModelClient
from promptopt.run.callbacks import Callback, EvaluationProgress, Event, TrialFinished
from promptopt.run.context import EvalRequest, RunContext, RunnableOptimizer, RunState, StopRun
from promptopt.run.history import History, TrialRecord
from promptopt.run.result import OptimizationResult, TrialSummary
from promptopt.run.rundir import versions

logger = logging.getLogger(__name__)

Selection = Literal["best", "significant"]
SELECTIONS: tuple[Selection, ...] = get_args(Selection)


def require_score(result: EvalResult, client: ModelClient) -> EvalResult:
    """``result``, unless every example failed at the API: that is an outage, never a score."""
    if result.n and result.n_api_errors == result.n:
        raise TooManyErrors(
            f"all {result.n} examples of the {result.split} evaluation failed, so it has no score; last error: "
            f"{result.records[-1].error} [{client.describe_model()}]."
        )
    return result


class Run:
    def __init__(
        self,
        *,
        task: Task,
        optimizer: RunnableOptimizer,
        client: ModelClient,
        proposer: ModelClient,
        seed: int,
        run_dir: Path | None,
        callbacks: Sequence[Callback],
        mode: Mode,
        replay: Sequence[TrialRecord] = (),
    ) -> None:
        self.task = task
        self.replay = list(replay)
        self.optimizer = optimizer
        self.client = client
        self.callbacks = list(callbacks)
        self.run_dir = run_dir
        self.label = "seed"
        self.evaluator = Evaluator(task, client, mode=mode, progress=self._progress)
        self.history = History(run_dir / "history.jsonl" if run_dir else None, previous=self.replay)
        self.proposer = proposer
        self.seed = seed
        self.state: RunState | None = None

    def emit(self, event: Event) -> None:
        for cb in self.callbacks:
            cb(event)

    def _progress(self, done: int, total: int) -> None:
        self.emit(EvaluationProgress(label=self.label, done=done, total=total))

    def trial(self, item: Prompt | EvalRequest, step: int) -> TrialRecord:
        prompt, examples, full = (item, None, True) if isinstance(item, Prompt) else (item.prompt, item.examples, False)
        if full and (done := self.history.find(prompt.id)) is not None:
            return done  # already scored on full dev: never pay twice, never duplicate history
        self.label = f"trial {len(self.history)}"
        status: Literal["complete", "failed"]
        try:
            result: EvalResult | None = self.evaluator.evaluate(
                prompt, examples, split="dev" if full else "dev-minibatch"
            )
            status, error = "complete", None
        except TemplateError as exc:
            result, status, error = None, "failed", str(exc)
        record = TrialRecord(
            trial=len(self.history),
            step=step,
            prompt=prompt,
            result=result,
            status=status,
            error=error,
            full=full,
            calls_so_far=self.client.budget.limited().calls,
            elapsed=self.client.budget.elapsed,
        )
        record = self._replayed(record)
        self.history.append(record)
        if self.state is not None:
            self.emit(TrialFinished(record=record, state=self.state, budget=self.client.budget))
        logger.info(
            "trial %d (%s): %.3f, best %.3f",
            record.trial,
            prompt.id,
            record.mean,
            (self.history.best() or record).mean,
        )
        return record

    def _replayed(self, record: TrialRecord) -> TrialRecord:
        """On resume, a re-run trial that matches the interrupted run's record keeps that record's spend
        (calls so far, elapsed time, calls paid), which the replay from the cache does not see."""
        old = self.replay[record.trial] if record.trial < len(self.replay) else None
        if old is None or (old.prompt.id, old.full, old.status, old.error) != (
            record.prompt.id,
            record.full,
            record.status,
            record.error,
        ):
            return record
        if old.result is None or record.result is None:
            return dataclasses.replace(record, calls_so_far=old.calls_so_far, elapsed=old.elapsed)
        if old.result.scores != record.result.scores:
            return record
        return dataclasses.replace(
            record,
            calls_so_far=old.calls_so_far,
            elapsed=old.elapsed,
            result=dataclasses.replace(record.result, calls=old.result.calls),
        )

    def execute(self, config: dict[str, Any], *, evaluate_test: bool) -> OptimizationResult:
        seed_prompt = self.task.seed_prompt()
        try:
            seed_record = self.trial(seed_prompt, step=0)
        except BudgetExhausted as exc:
            raise BudgetExhausted(f"the budget does not cover scoring the seed prompt on dev: {exc}") from None
        if seed_record.status != "complete":
            raise TemplateError(f"the task's seed prompt does not render: {seed_record.error}")
        assert seed_record.result is not None
        require_score(seed_record.result, self.client)
        self.state = state = RunState(history=self.history, seed_record=seed_record)
        self.emit(TrialFinished(record=seed_record, state=state, budget=self.client.budget))
        ctx = RunContext(
            task=self.task,
            evaluator=self.evaluator,
            proposer=self.proposer,
            rng=random.Random(self.seed),
            seed=self.seed,
            state=state,
            trial=self.trial,
            artifacts=self.run_dir,
        )
        # no budget check here: the client stops at the first call the budget cannot pay, so evaluations the
        # cache answers for free (e.g. confirming a candidate on dev examples it was screened on) still run
        try:
            if state.stop_requested:  # a callback stopped the run on the seed prompt's trial
                raise StopRun(state.stop_reason or "stopped")
            stop_reason = self.optimizer.run(ctx) or "optimizer finished"
            if state.stop_requested:  # a callback's stop names the end even when the optimizer ended there too
                stop_reason = state.stop_reason or stop_reason
        except StopRun as exc:
            stop_reason = str(exc)
        except BudgetExhausted as exc:
            stop_reason = str(exc)
        best = state.chosen or self.history.best() or seed_record
        selection, dev_comparison = "best dev score", None
        seed_id = seed_record.prompt.id
        screened = len({r.prompt.id for r in self.history if not r.full and r.prompt.id != seed_id})
        confirmed = [r for r in self.history.full() if r.prompt.id != seed_id and r.status == "complete"]
        if state.chosen is not None:
            selection = "chosen by the optimizer without dev labels (its dev score is reported, not compared)"
            assert seed_record.result is not None and best.result is not None
            dev_comparison = compare(seed_record.result, best.result).to_dict()
        elif best.prompt.id == seed_id:
            if not confirmed:
                selection = (
                    f"seed prompt kept: no candidate was confirmed on full dev ({screened} screened on minibatches; "
                    f"stopped: {stop_reason})"
                )
            else:
                top = max(confirmed, key=lambda r: r.mean)
                selection = (
                    f"seed prompt kept: none of the {len(confirmed)} candidates confirmed on full dev beat it "
                    f"(best {top.mean:.3f} vs seed {seed_record.mean:.3f})"
                )
        else:
            assert seed_record.result is not None and best.result is not None
            gain = compare(seed_record.result, best.result)
            dev_comparison = gain.to_dict()
            if config["select"] == "significant" and gain.ci_low <= 0:
                selection = (
                    f"seed prompt kept: the best candidate ({best.prompt.id}) gained {gain.diff:+.3f} on dev "
                    f"[95% CI {gain.ci_low:+.3f}–{gain.ci_high:+.3f}], not significant"
                )
                best = seed_record
        search = {"screened": screened, "confirmed": len(confirmed)}
        return self._finish(
            config, seed_record, best, stop_reason, evaluate_test, state, selection, dev_comparison, search
        )

    def _finish(
        self,
        config: dict[str, Any],
        seed_record: TrialRecord,
        best: TrialRecord,
        stop_reason: str,
        evaluate_test: bool,
        state: RunState,
        selection: str,
        dev_comparison: dict[str, Any] | None,
        search: dict[str, int],
    ) -> OptimizationResult:
        assert seed_record.result is not None and best.result is not None
        baseline_test = best_test = comparison = None
        if evaluate_test:
            report = self.client.with_role("report")
            self.label = "test: seed prompt"
            seed_test = require_score(self.evaluator.evaluate(seed_record.prompt, split="test", client=report), report)
            self.label = "test: best prompt"
            same = best.prompt.id == seed_record.prompt.id
            best_eval = (
                seed_test
                if same
                else require_score(self.evaluator.evaluate(best.prompt, split="test", client=report), report)
            )
            baseline_test, best_test = seed_test.summary(), best_eval.summary()
            comparison = compare(seed_test, best_eval).to_dict()
            if self.run_dir is not None:
                payload = {"seed": seed_test.to_dict(), "best": best_eval.to_dict()}
                (self.run_dir / "test_results.json").write_text(json.dumps(payload, indent=2, ensure_ascii=False))
        result = OptimizationResult(
            task=self.task.name,
            optimizer=config["optimizer"],
            optimizer_config=config["optimizer_config"],
            model=config["model"],
            proposer=config["proposer"],
            seed=config["seed"],
            best_prompt=best.prompt,
            seed_prompt=seed_record.prompt,
            baseline_dev=seed_record.result.summary(),
            best_dev=best.result.summary(),
            baseline_test=baseline_test,
            best_test=best_test,
            test_comparison=comparison,
            n_trials=len(self.history),
            stop_reason=stop_reason,
            rejected=dict(state.rejected),
            selection=selection,
            dev_comparison=dev_comparison,
            search=search,
            notes=list(self.optimizer.notes),
            racing=asdict(self.optimizer.racing) if self.optimizer.racing else {},
            usage=self.client.budget.to_dict(),
            run_dir=str(self.run_dir) if self.run_dir else None,
            versions=versions(),
            trials=tuple(TrialSummary.from_record(r) for r in self.history),
        )
        if self.run_dir is not None:
            result.save(self.run_dir / "result.json")
            best.prompt.export(
                self.run_dir / "best_prompt",
                extra={"task": self.task.name, "dev": result.best_dev, "test": best_test},
            )
        return result
