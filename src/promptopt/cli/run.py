"""The commands that spend model calls: ``optimize``, ``evaluate`` and ``spread``. Each translates its options into
a call of the Python API of the same name (:mod:`promptopt.api`) and prints the result.

The options' defaults are the API's (:mod:`promptopt.cli.options`); ``cache`` left unset passes the API's default.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from promptopt.cli.errors import guarded, out, resume_hint
from promptopt.cli.options import (
    BUDGET,
    EVALUATE,
    EVALUATE_MAX_ERRORS,
    OPTIMIZE,
    OPTIMIZE_MAX_ERRORS,
    SPREAD,
    ApiBase,
    BatchSize,
    BudgetCalls,
    BudgetCost,
    BudgetSeconds,
    BudgetTokens,
    CachePath,
    EvalMode,
    Formats,
    FormatSeed,
    JsonOut,
    Limit,
    MaxErrors,
    ModelOpts,
    ModelSpec,
    NoCache,
    NoTest,
    OptimizerName,
    OptionalTaskName,
    PromptPath,
    Proposer,
    QuietBar,
    QuietBars,
    Resume,
    RunsDir,
    RunSeed,
    Select,
    Settings,
    ShowErrors,
    Split,
    StudyName,
    StudyStorage,
    TaskArgument,
    TaskModel,
    TaskName,
    Verbose,
    build_model,
    load_prompt,
    parse_overrides,
)
from promptopt.cli.progress import progress, setup_logging
from promptopt.core.exceptions import ConfigError


def optimize(
    task_arg: TaskArgument = None,
    task: OptionalTaskName = None,
    optimizer: OptimizerName = OPTIMIZE["optimizer"],
    model: TaskModel = OPTIMIZE["model"],
    proposer: Proposer = OPTIMIZE["proposer"],
    budget_calls: BudgetCalls = BUDGET.max_calls,
    budget_tokens: BudgetTokens = BUDGET.max_tokens,
    budget_cost: BudgetCost = BUDGET.max_cost,
    budget_seconds: BudgetSeconds = BUDGET.max_seconds,
    seed: RunSeed = OPTIMIZE["seed"],
    # Not the API's run_dir (None: no run directory): the command line always records its run, in a new
    # directory under this one.
    runs_dir: RunsDir = Path("runs"),
    resume: Resume = None,
    set_: Settings = [],  # noqa: B006
    api_base: ApiBase = None,
    model_opt: ModelOpts = [],  # noqa: B006
    cache: CachePath = None,
    storage: StudyStorage = None,
    study: StudyName = None,
    max_errors: MaxErrors = OPTIMIZE_MAX_ERRORS,
    no_test: NoTest = not OPTIMIZE["evaluate_test"],
    select: Select = OPTIMIZE["select"],
    batch_size: BatchSize = OPTIMIZE["batch_size"],
    json_out: JsonOut = False,
    quiet: QuietBars = False,
    verbose: Verbose = False,
) -> None:
    """Optimize a task's prompt; prints seed vs best dev score (95% CIs), the held-out test score and the spend."""
    setup_logging(verbose)

    def run() -> Any:
        from promptopt.api import check_select
        from promptopt.api import optimize as run_optimize
        from promptopt.api import resume as run_resume
        from promptopt.models.budget import Budget, ErrorLimit
        from promptopt.optimizers.presets import load_optimizer
        from promptopt.run.rundir import new_run_dir, read_run_config

        budget = Budget(
            max_calls=budget_calls, max_tokens=budget_tokens, max_cost=budget_cost, max_seconds=budget_seconds
        )
        limit = ErrorLimit.of(max_errors)
        with progress(not quiet and not json_out) as handler:
            callbacks = [handler] if handler else []
            if resume is not None:
                saved = read_run_config(resume)
                with resume_hint(resume):
                    return run_resume(
                        resume,
                        callbacks=callbacks,
                        budget=None if budget.unlimited else budget,
                        max_errors=limit,
                        model=build_model(saved["model"], api_base, model_opt),
                        proposer=build_model(saved["proposer"], api_base, model_opt, "--proposer"),
                    )
            task_name = task or task_arg
            if not task_name:
                raise ConfigError(
                    "give a task: promptopt optimize --task sst2 (see `promptopt tasks list`).", field="--task"
                )
            from promptopt.core.taskfile import load_task

            task_obj = load_task(task_name)
            shared = {k: v for k, v in (("storage", storage), ("study_name", study)) if v is not None}
            opt = load_optimizer(optimizer, **parse_overrides(set_, "--set"), **shared)  # more: promptopt worker
            model_obj = build_model(model, api_base, model_opt)
            proposer_obj = build_model(proposer, api_base, model_opt, "--proposer")
            run_dir = new_run_dir(runs_dir, task_obj.name, optimizer)
            with resume_hint(run_dir):
                return run_optimize(
                    task_obj.source if task_obj.source != "<python>" else task_obj,
                    opt,
                    model_obj,
                    proposer=proposer_obj,
                    budget=budget,
                    seed=seed,
                    run_dir=run_dir,
                    cache=cache if cache is not None else OPTIMIZE["cache"],
                    callbacks=callbacks,
                    evaluate_test=not no_test,
                    batch_size=batch_size,
                    select=check_select(select),
                    max_errors=limit,
                )

    result = guarded(run)
    if json_out:
        out.print_json(json.dumps(result.to_dict()))
    else:
        out.print(result.format(), highlight=False, soft_wrap=True)


def evaluate(
    task: TaskName,
    model: ModelSpec = EVALUATE["model"],
    prompt: PromptPath = EVALUATE["prompt"],
    split: Split = EVALUATE["split"],
    limit: Limit = EVALUATE["limit"],
    mode: EvalMode = EVALUATE["mode"],
    api_base: ApiBase = None,
    model_opt: ModelOpts = [],  # noqa: B006
    cache: CachePath = None,
    no_cache: NoCache = EVALUATE["cache"] is False,
    max_errors: MaxErrors = EVALUATE_MAX_ERRORS,
    batch_size: BatchSize = EVALUATE["batch_size"],
    json_out: JsonOut = False,
    quiet: QuietBar = False,
    show_errors: ShowErrors = 0,
) -> None:
    """Score a prompt (default: the task's seed prompt) on a split, with a 95% CI and the calls spent."""

    def run() -> tuple[Any, Any]:
        from promptopt.api import check_mode
        from promptopt.api import evaluate as run_evaluate
        from promptopt.core.taskfile import load_task
        from promptopt.models.budget import BudgetTracker
        from promptopt.run.callbacks import EvaluationProgress

        task_obj = load_task(task)
        candidate = load_prompt(prompt)
        model_obj = build_model(model, api_base, model_opt)
        tracker = BudgetTracker()
        with progress(not quiet and not json_out) as handler:

            def tick(done: int, total: int) -> None:
                if handler:
                    handler(EvaluationProgress(label=f"evaluate {split}", done=done, total=total))

            result = run_evaluate(
                task_obj,
                model_obj,
                candidate,
                split=split,
                limit=limit,
                cache=False if no_cache else (cache if cache is not None else EVALUATE["cache"]),
                batch_size=batch_size,
                mode=check_mode(mode),
                tracker=tracker,
                progress=tick,
                max_errors=max_errors,
            )
        return result, tracker

    result, tracker = guarded(run)
    usage = tracker.total
    if json_out:
        payload = {**result.summary(), "usage": usage.to_dict(), "records": [r.to_dict() for r in result.records]}
        out.print_json(json.dumps(payload))
        return
    out.print(f"{result.metric}: {result.format()}  ({result.mode} mode)", highlight=False)
    out.print(
        f"model calls: {usage.calls} ({usage.cache_hits} cache hits), tokens: {usage.tokens}, cost: ${usage.cost:.4f}, "
        f"{tracker.elapsed:.1f}s",
        highlight=False,
    )
    shown = 0
    for r in result.records:
        if shown >= show_errors:
            break
        if r.score < 1.0:
            out.print(f"  ✗ {r.example_id}: predicted {r.prediction!r} {('(' + r.error + ')') if r.error else ''}")
            shown += 1


def spread(
    task: TaskName,
    prompt: PromptPath = SPREAD["prompt"],
    model: ModelSpec = SPREAD["model"],
    formats: Formats = SPREAD["n_formats"],
    split: Split = SPREAD["split"],
    limit: Limit = SPREAD["limit"],
    seed: FormatSeed = SPREAD["seed"],
    mode: EvalMode = SPREAD["mode"],
    cache: CachePath = None,
    batch_size: BatchSize = SPREAD["batch_size"],
    # api.spread takes a tracker, not max_errors: the limit set on it is evaluate's default.
    max_errors: MaxErrors = EVALUATE_MAX_ERRORS,
    json_out: JsonOut = False,
) -> None:
    """FormatSpread: score a prompt under N plausible formats (separators, casing, field names, spacing,
    option markers) and print the interval (min, median, max)."""

    def run() -> Any:
        from promptopt.api import check_mode
        from promptopt.api import spread as run_spread
        from promptopt.models.budget import BudgetTracker, ErrorLimit

        checked_mode = check_mode(mode)
        return run_spread(
            task,
            model,
            load_prompt(prompt),
            n_formats=formats,
            seed=seed,
            split=split,
            limit=limit,
            cache=cache if cache is not None else SPREAD["cache"],
            batch_size=batch_size,
            mode=checked_mode,
            tracker=BudgetTracker(max_errors=ErrorLimit.of(max_errors)),
        )

    result = guarded(run)
    if json_out:
        out.print_json(json.dumps(result.summary()))
        return
    table = Table("#", "format", result.results[0].metric, "95% CI")
    for i, (f, r) in enumerate(zip(result.formats, result.results, strict=True)):
        lo, hi = r.ci
        table.add_row(str(i), f.describe() + (" (as written)" if i == 0 else ""), f"{r.mean:.3f}", f"{lo:.3f}–{hi:.3f}")
    out.print(table)
    out.print(result.format(), highlight=False, soft_wrap=True)
