"""The runner owns the optimization loop: budget, cache, callbacks, run directory, resume, seeding.

Resume is deterministic replay: every model response is in the response cache and every random choice
comes from the run seed, so re-running a run's saved configuration reproduces the finished part for
free (cache hits cost nothing) and continues with the budget it had left.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import platform
import random
import sqlite3
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from promptopt._files import write_text_atomic
from promptopt.budget import DEFAULT_MAX_ERRORS, Budget, BudgetTracker, ErrorLimit
from promptopt.cache import ResponseCache, default_cache_path
from promptopt.callbacks import Callback, EvaluationProgress, Event, RunFinished, RunStarted, TrialFinished
from promptopt.candidate import Prompt
from promptopt.client import ModelClient
from promptopt.evaluation import EvalResult, Evaluator, Mode, compare
from promptopt.exceptions import BudgetExhausted, ConfigError, TemplateError, TooManyErrors
from promptopt.history import History, TrialRecord
from promptopt.models import Model, get_model
from promptopt.optimizers.base import EvalRequest, Optimizer, RunContext, RunState
from promptopt.optimizers.planning import refuse_small_budget
from promptopt.presets import build_optimizer, load_optimizer
from promptopt.result import OptimizationResult
from promptopt.task import Task
from promptopt.taskfile import load_task

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
RESUME_KEYS = (
    "task",
    "optimizer",
    "optimizer_config",
    "model",
    "proposer",
    "budget",
    "seed",
    "cache",
    "evaluate_test",
    "batch_size",
    "mode",
)
"""The settings in a run's config.json that :func:`resume` needs."""
Selection = Literal["best", "significant"]
SELECTIONS: tuple[str, ...] = get_args(Selection)
MODES: tuple[str, ...] = get_args(Mode)
MaxErrors = ErrorLimit | float | int | str | None


def open_cache(cache: ResponseCache | str | Path | bool) -> ResponseCache | None:
    """``True`` → the default cache file, ``False`` → none, a path → that file, or a cache as is.

    A path that cannot hold the cache (a directory, an unwritable place, a file that is not SQLite) is a
    :class:`ConfigError` naming it.
    """
    if isinstance(cache, ResponseCache):
        return cache
    if cache is False:
        return None
    path = default_cache_path() if cache is True else Path(cache)
    where = " (the default cache; set PROMPTOPT_HOME or pass a cache path)" if cache is True else ""
    if path.is_dir():
        raise ConfigError(
            f"{path} is a directory{where}; give the cache a file path, e.g. {path / 'responses.sqlite'}.",
            field="cache",
        )
    try:
        return ResponseCache(path)
    except (OSError, sqlite3.Error) as exc:
        raise ConfigError(
            f"cannot use {path} as the response cache ({exc}){where}; give a writable path to a new or existing "
            "promptopt cache file.",
            field="cache",
        ) from None


def check_mode(mode: str, task: Task | None = None) -> None:
    """Refuse an unknown evaluation mode, or label scoring for a ``task`` without labels."""
    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; use {', '.join(MODES)}.", field="mode")
    if mode == "score" and task is not None and task.labels is None:
        raise ConfigError(
            f"task '{task.name}' has no labels, and label scoring needs them; use mode generate or auto, or give "
            "the task 'labels'.",
            field="mode",
        )


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A run directory's saved settings; a missing, damaged or incomplete config.json is a ConfigError naming it."""
    cfg_file = run_dir / CONFIG_FILE
    if not cfg_file.is_file():
        raise ConfigError(
            f"cannot resume: no {CONFIG_FILE} here; give a run directory made by promptopt optimize.",
            source=str(run_dir),
        )
    damaged = "The run directory is damaged: restore the file or start a new run."
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON ({exc.msg}, line {exc.lineno}). {damaged}", source=str(cfg_file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc}). {damaged}", source=str(cfg_file)) from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"not a JSON object of run settings. {damaged}", source=str(cfg_file))
    missing = [k for k in RESUME_KEYS if k not in cfg]
    if missing:
        raise ConfigError(f"missing from the saved settings. {damaged}", source=str(cfg_file), field=missing[0])
    return cfg


def new_run_dir(root: str | Path, task: str, optimizer: str) -> Path:
    """A new run directory under ``root``, created here so that runs started in the same second (other processes
    on the same root) take different names; if it cannot be created, the name only (the run says why)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{Path(task).name}-{Path(optimizer).stem}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            if not path.exists():  # not this name that is taken: a file in the way of ``root``
                return path
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        except OSError:
            return path


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("promptopt-toolkit", "torch", "transformers", "litellm"):
        if dist == "promptopt-toolkit" or dist in sys.modules:
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                out[dist] = "unknown"
    return out


def optimize(
    task: Task | str | Path,
    optimizer: Optimizer | str = "baseline",
    model: Model | str = "smollm2",
    *,
    proposer: Model | str | None = None,
    budget: Budget | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    cache: ResponseCache | str | Path | bool = True,
    callbacks: Sequence[Callback] = (),
    evaluate_test: bool = True,
    batch_size: int = 32,
    mode: Mode = "auto",
    select: Selection = "best",
    resume: bool = False,
    max_errors: MaxErrors = DEFAULT_MAX_ERRORS,
) -> OptimizationResult:
    """Optimize ``task``'s prompt with ``optimizer`` for ``model`` within ``budget``.

    Strings are resolved: tasks by name or path, optimizers by preset or registered name, models by spec
    (see :func:`promptopt.models.get_model`). ``proposer`` (the model that writes prompts) defaults to
    ``model``. With ``run_dir`` the run writes config.json, history.jsonl, usage.json, result.json and
    the best prompt's export there; ``resume=True`` continues an interrupted run in that directory.

    ``select="best"`` (the default) returns the best dev candidate whatever its margin. ``select="significant"``
    guards against the winner's curse: the best dev candidate replaces the seed prompt only if its paired dev
    gain over the seed has a 95% CI above 0. Measured over 53 runs with 32 dev examples
    (``benchmarks/results/fewshot.md``) it changed 10 outcomes, 5 for the better and 5 for the worse, so it is
    not the default.

    ``max_errors`` (see :meth:`ErrorLimit.of`; default: more than 20% of the calls, once 10 were made) stops the run
    with :class:`TooManyErrors` when too many model calls fail, and so does a seed or test evaluation where every
    example failed: an outage is not a score. Finished calls are cached, so resuming does not pay them again.
    """
    if select not in SELECTIONS:
        raise ConfigError(f"select must be one of {', '.join(SELECTIONS)}, got {select!r}", field="select")
    if resume and run_dir is None:
        raise ConfigError("resume=True needs the run_dir of the run to continue.", field="run_dir")
    task_spec = str(task) if isinstance(task, str | Path) else task.source
    task_obj = load_task(task) if isinstance(task, str | Path) else task
    check_mode(mode, task_obj)
    limit = ErrorLimit.of(max_errors)
    opt = load_optimizer(optimizer) if isinstance(optimizer, str) else optimizer
    model_spec = model if isinstance(model, str) else model.name
    proposer_spec = proposer if isinstance(proposer, str) else (proposer.name if proposer is not None else model_spec)
    model_obj = get_model(model)
    if opt.needs_trainable_model and not model_obj.capabilities.trainable:
        raise ConfigError(
            f"optimizer '{opt.name}' trains in process, and model {model_obj.name!r} cannot be trained. "
            "Use an in-process Hugging Face model: --model smollm2 or --model hf:<path or hub id>.",
            field="model",
        )
    try:
        proposer_obj = model_obj if proposer is None or proposer == model else get_model(proposer)
    except ConfigError as exc:
        raise ConfigError(exc.message, source=exc.source, field="proposer") from None
    budget = budget or Budget()
    if budget.max_calls is not None and opt.min_calls(task_obj):
        refuse_small_budget(
            opt.name, opt.min_calls(task_obj), len(task_obj.dev), budget.max_calls, "one screening and one confirmation"
        )
    cache_obj = open_cache(cache)

    out: Path | None = Path(run_dir) if run_dir is not None else None
    config = {
        "task": task_spec,
        "optimizer": opt.name,
        "optimizer_config": opt.to_config(),
        "model": model_spec,
        "proposer": proposer_spec,
        "budget": asdict(budget),
        "seed": seed,
        "cache": cache_obj.path if cache_obj is not None else None,
        "evaluate_test": evaluate_test,
        "batch_size": batch_size,
        "mode": mode,
        "select": select,
    }
    tracker = BudgetTracker(budget=budget, max_errors=limit)
    previous: list[TrialRecord] = []
    if out is not None:
        _prepare_run_dir(out, config, resume=resume, tracker=tracker)
        tracker.path = out / "usage.json"
        if resume:
            previous = _readable_history(out / "history.jsonl")
    run = _Run(
        task=task_obj,
        optimizer=opt,
        client=ModelClient(model_obj, cache=cache_obj, budget=tracker, role="task", batch_size=batch_size),
        proposer=ModelClient(proposer_obj, cache=cache_obj, budget=tracker, role="proposer", batch_size=batch_size),
        seed=seed,
        run_dir=out,
        callbacks=callbacks,
        mode=mode,
        replay=previous,
    )
    run.emit(RunStarted(config=config, budget=tracker))
    result = run.execute(config, evaluate_test=evaluate_test)
    run.emit(RunFinished(result=result))
    return result


def evaluate(
    task: Task | str | Path,
    model: Model | str = "smollm2",
    prompt: Prompt | None = None,
    *,
    split: str = "dev",
    limit: int | None = None,
    cache: ResponseCache | str | Path | bool = True,
    batch_size: int = 32,
    mode: Mode = "auto",
    tracker: BudgetTracker | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_errors: MaxErrors = DEFAULT_MAX_ERRORS,
) -> EvalResult:
    """Score ``prompt`` (default: the task's seed prompt) on the first ``limit`` examples of ``split``.

    Pass a ``tracker`` to read the calls, tokens and cache hits spent (its ``max_errors`` is set to this one's).
    Too many failed calls (``max_errors``, as in :func:`optimize`), or all of them, raise :class:`TooManyErrors`
    instead of returning a score.
    """
    task_obj = load_task(task) if isinstance(task, str | Path) else task
    check_mode(mode, task_obj)
    if split not in task_obj.splits:
        raise ConfigError(f"unknown split {split!r}; use one of {sorted(task_obj.splits)}.", field="split")
    if limit is not None and limit < 1:
        raise ConfigError(f"must be >= 1, got {limit}.", field="limit")
    examples = task_obj.splits[split][:limit] if limit else task_obj.splits[split]
    tracker = tracker or BudgetTracker()
    tracker.max_errors = ErrorLimit.of(max_errors)
    client = ModelClient(get_model(model), cache=open_cache(cache), budget=tracker, batch_size=batch_size)
    evaluator = Evaluator(task_obj, client, mode=mode, progress=progress)
    return _scored(evaluator.evaluate(prompt or task_obj.seed_prompt(), examples, split=split), client)


def _scored(result: EvalResult, client: ModelClient) -> EvalResult:
    """``result``, unless every example failed at the API: that is an outage, never a score."""
    if result.n and result.n_api_errors == result.n:
        raise TooManyErrors(
            f"all {result.n} examples of the {result.split} evaluation failed, so it has no score; last error: "
            f"{result.records[-1].error} [{client.describe_model()}]."
        )
    return result


def resume(
    run_dir: str | Path,
    *,
    callbacks: Sequence[Callback] = (),
    budget: Budget | None = None,
    max_errors: MaxErrors = DEFAULT_MAX_ERRORS,
    model: Model | str | None = None,
    proposer: Model | str | None = None,
) -> OptimizationResult:
    """Continue the run in ``run_dir`` from its saved configuration (optionally with a new budget).

    ``model`` and ``proposer`` replace the saved model specs with models of the same name built with options that
    are never saved (an endpoint, an API key).
    """
    path = Path(run_dir)
    cfg = read_run_config(path)
    if cfg["task"] == "<python>":
        raise ConfigError(
            "this run's task was built in Python; resume it with optimize(..., resume=True).",
            source=str(path),
        )
    source = str(path / CONFIG_FILE)
    try:
        opt = build_optimizer(cfg["optimizer"], cfg["optimizer_config"], source=source)
        saved_budget = Budget(**cfg["budget"])
    except ConfigError as exc:
        raise exc.located(source=source) from None
    except TypeError as exc:
        raise ConfigError(
            f"the saved settings do not load ({exc}); restore the file or start a new run.", source=source
        ) from None
    return optimize(
        cfg["task"],
        opt,
        model or cfg["model"],
        proposer=proposer or cfg["proposer"],
        budget=budget or saved_budget,
        seed=cfg["seed"],
        run_dir=path,
        cache=cfg["cache"] if cfg["cache"] is not None else False,
        callbacks=callbacks,
        evaluate_test=cfg["evaluate_test"],
        batch_size=cfg["batch_size"],
        mode=cfg["mode"],
        select=cfg.get("select", "best"),
        resume=True,
        max_errors=max_errors,
    )


def _readable_history(path: Path) -> list[TrialRecord]:
    """The interrupted run's trial records (see :meth:`History.load`); none if it wrote none."""
    return History.load(path) if path.is_file() else []


def _prepare_run_dir(out: Path, config: dict[str, Any], *, resume: bool, tracker: BudgetTracker) -> None:
    if resume:
        saved = read_run_config(out)
        changed = sorted(
            k for k in ("task", "optimizer", "optimizer_config", "model", "proposer", "seed") if saved[k] != config[k]
        )
        if changed:
            raise ConfigError(f"cannot resume with different settings ({', '.join(changed)}).", source=str(out))
        if (out / "usage.json").is_file():
            tracker.restore(out / "usage.json")
    elif out.is_file():
        raise ConfigError("a file is in the run directory's place; pick another directory.", source=str(out))
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(
            "run directory is not empty; pick a new one or resume this run with --resume.", source=str(out)
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")  # a killed resume stays resumable
    except OSError as exc:
        raise ConfigError(
            f"cannot write the run directory ({exc.strerror}: {exc.filename}); give a writable directory.",
            source=str(out),
            field=None if resume else "run_dir",
        ) from None


class _Run:
    def __init__(
        self,
        *,
        task: Task,
        optimizer: Optimizer,
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
        self.ctx = RunContext(
            task=task,
            evaluator=self.evaluator,
            proposer=proposer,
            rng=random.Random(seed),
            seed=seed,
            run_dir=run_dir,
        )
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
            status=status,  # type: ignore[arg-type]
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
        _scored(seed_record.result, self.client)
        self.state = state = RunState(history=self.history, seed_record=seed_record)
        self.emit(TrialFinished(record=seed_record, state=state, budget=self.client.budget))
        stop_reason = "optimizer finished"
        try:
            self.optimizer.setup(self.ctx)
            # no budget check here: the client stops at the first call the budget cannot pay, so evaluations
            # the cache answers for free (e.g. confirming a candidate on dev examples it was screened on) still run
            while True:
                if state.stop_requested:
                    stop_reason = state.stop_reason or "stopped"
                    break
                if self.optimizer.should_stop(state):
                    stop_reason = state.stop_reason or "optimizer converged"
                    break
                state.step += 1
                proposals = self.optimizer.propose(state)
                if not proposals:
                    stop_reason = state.stop_reason or stop_reason
                    break
                records = [self.trial(p, step=state.step) for p in proposals]
                self.optimizer.observe(state, records)
        except BudgetExhausted as exc:
            stop_reason = str(exc)
        best = self.history.best() or seed_record
        selection, dev_comparison = "best dev score", None
        seed_id = seed_record.prompt.id
        screened = len({r.prompt.id for r in self.history if not r.full and r.prompt.id != seed_id})
        confirmed = [r for r in self.history.full() if r.prompt.id != seed_id and r.status == "complete"]
        if best.prompt.id == seed_id:
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
            seed_test = _scored(self.evaluator.evaluate(seed_record.prompt, split="test", client=report), report)
            self.label = "test: best prompt"
            same = best.prompt.id == seed_record.prompt.id
            best_eval = (
                seed_test
                if same
                else _scored(self.evaluator.evaluate(best.prompt, split="test", client=report), report)
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
        )
        if self.run_dir is not None:
            result.save(self.run_dir / "result.json")
            best.prompt.export(
                self.run_dir / "best_prompt",
                extra={"task": self.task.name, "dev": result.best_dev, "test": best_test},
            )
        return result
