"""The Python API's entry points: :func:`optimize`, :func:`evaluate`, :func:`resume`, :func:`spread`,
:func:`robustness`.

They resolve names (tasks, optimizers, models, caches), check the settings before anything is spent, and hand
the run to :class:`promptopt.run.loop.Run`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import get_args

from promptopt.core.candidate import Prompt
from promptopt.core.data import Example
from promptopt.core.exceptions import ConfigError
from promptopt.core.task import Task
from promptopt.core.taskfile import load_task
from promptopt.evaluation.evaluator import EvalResult, Evaluator, Mode
from promptopt.evaluation.rephrasing import RephrasingResult, rephrasing_spread
from promptopt.evaluation.spread import SpreadResult, format_spread
from promptopt.models import Model, get_model
from promptopt.models.budget import DEFAULT_MAX_ERRORS, Budget, BudgetTracker, ErrorLimit
from promptopt.models.cache import ResponseCache, open_cache
from promptopt.models.client import ModelClient
from promptopt.optimizers.base import Optimizer
from promptopt.optimizers.config import is_one_of
from promptopt.optimizers.paraphrases import Source, paraphrase_set
from promptopt.optimizers.planning import refuse_small_budget
from promptopt.optimizers.presets import build_optimizer, load_optimizer
from promptopt.optimizers.proposer import Proposer
from promptopt.prompts.equivalence import Equivalence
from promptopt.run.callbacks import Callback, EvaluationProgress, RunFinished, RunStarted
from promptopt.run.history import TrialRecord
from promptopt.run.loop import SELECTIONS, Run, Selection, require_score
from promptopt.run.progress import progress_display
from promptopt.run.result import OptimizationResult
from promptopt.run.rundir import CONFIG_FILE, prepare_run_dir, read_run_config, readable_history

MODES: tuple[Mode, ...] = get_args(Mode)
MaxErrors = ErrorLimit | float | int | str | None


def check_mode(mode: str, task: Task | None = None) -> Mode:
    """``mode``, checked: refuse an unknown evaluation mode, or label scoring for a ``task`` without labels."""
    if not is_one_of(mode, MODES):
        raise ConfigError(f"unknown mode {mode!r}; use {', '.join(MODES)}.", field="mode")
    if mode == "score" and task is not None and task.labels is None:
        raise ConfigError(
            f"task '{task.name}' has no labels, and label scoring needs them; use mode generate or auto, or give "
            "the task 'labels'.",
            field="mode",
        )
    return mode


def check_select(select: str) -> Selection:
    """``select``, checked: refuse an unknown way to select the result."""
    if not is_one_of(select, SELECTIONS):
        raise ConfigError(f"select must be one of {', '.join(SELECTIONS)}, got {select!r}", field="select")
    return select


def optimize(
    task: Task | str | Path,
    optimizer: Optimizer | str = "auto",
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
    progress: bool = False,
) -> OptimizationResult:
    """Optimize ``task``'s prompt with ``optimizer`` for ``model`` within ``budget``.

    Strings are resolved: tasks by name or path, optimizers by preset or registered name, models by spec
    (see :func:`promptopt.models.get_model`). ``proposer`` (the model that writes prompts) defaults to
    ``model``. With ``run_dir`` the run writes config.json, history.jsonl, usage.json, result.json and
    the best prompt's export there; ``resume=True`` continues an interrupted run in that directory.

    ``optimizer`` defaults to ``"auto"``, as on the command line: few-shot demos first, then a soft prompt for an
    in-process Hugging Face model or an instruction search for any other (``"baseline"`` scores the seed prompt only).

    ``select="best"`` (the default) returns the best dev candidate whatever its margin. ``select="significant"``
    guards against the winner's curse: the best dev candidate replaces the seed prompt only if its paired dev
    gain over the seed has a 95% CI above 0. Measured over 65 runs with 32 dev examples
    (``benchmarks/results/fewshot.md``) it changed 11 outcomes, 4 for the better and 7 for the worse, so it is
    not the default.

    ``max_errors`` (see :meth:`ErrorLimit.of`; default: more than 20% of the calls, once 10 were made) stops the run
    with :class:`TooManyErrors` when too many model calls fail, and so does a seed or test evaluation where every
    example failed: an outage is not a score. Finished calls are cached, so resuming does not pay them again.

    ``progress=True`` shows the run's progress on stderr while it works
    (:func:`promptopt.run.progress.progress_display`: bars on a terminal or in a notebook with ipywidgets, one line
    per trial elsewhere). Off by default.
    """
    check_select(select)
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
    if opt.needs_train_labels and (unlabeled := task_obj.unlabeled_train):
        raise ConfigError(
            f"task '{task_obj.name}' has {len(unlabeled)} unlabeled train examples (e.g. '{unlabeled[0].id}'), and "
            f"optimizer '{opt.name}' learns from train targets. Give the train examples targets, or use the "
            "label-free --optimizer unsupervised.",
            source=task_obj.source,
            field="optimizer",
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
        prepare_run_dir(out, config, resume=resume, tracker=tracker)
        tracker.path = out / "usage.json"
        if resume:
            previous = readable_history(out / "history.jsonl")
    with progress_display(progress) as show:
        run = Run(
            task=task_obj,
            optimizer=opt,
            client=ModelClient(model_obj, cache=cache_obj, budget=tracker, role="task", batch_size=batch_size),
            proposer=ModelClient(proposer_obj, cache=cache_obj, budget=tracker, role="proposer", batch_size=batch_size),
            seed=seed,
            run_dir=out,
            callbacks=[*callbacks, show] if show is not None else callbacks,
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
    progress: bool | Callable[[int, int], None] | None = False,
    max_errors: MaxErrors = DEFAULT_MAX_ERRORS,
) -> EvalResult:
    """Score ``prompt`` (default: the task's seed prompt) on the first ``limit`` examples of ``split``.

    Pass a ``tracker`` to read the calls, tokens and cache hits spent (its ``max_errors`` is set to this one's).
    Too many failed calls (``max_errors``, as in :func:`optimize`), or all of them, raise :class:`TooManyErrors`
    instead of returning a score.

    ``progress=True`` shows the evaluation's progress on stderr (as :func:`optimize` does); a function instead is
    called with (examples done, total) as it goes.
    """
    task_obj, examples = _split_examples(task, split, limit)
    check_mode(mode, task_obj)
    tracker = tracker or BudgetTracker()
    tracker.max_errors = ErrorLimit.of(max_errors)
    client = ModelClient(get_model(model), cache=open_cache(cache), budget=tracker, batch_size=batch_size)
    with progress_display(progress is True) as show:
        tick = progress if callable(progress) else None
        if show is not None:

            def tick(done: int, total: int) -> None:
                show(EvaluationProgress(label=f"evaluate {split}", done=done, total=total))

        evaluator = Evaluator(task_obj, client, mode=mode, progress=tick)
        return require_score(evaluator.evaluate(prompt or task_obj.seed_prompt(), examples, split=split), client)


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


def _split_examples(task: Task | str | Path, split: str, limit: int | None) -> tuple[Task, list[Example]]:
    """The task and the first ``limit`` examples of its ``split`` (all without a limit)."""
    task_obj = load_task(task) if isinstance(task, str | Path) else task
    if split not in task_obj.splits:
        raise ConfigError(f"unknown split {split!r}; use one of {sorted(task_obj.splits)}.", field="split")
    if limit is not None and limit < 1:
        raise ConfigError(f"must be >= 1, got {limit}.", field="limit")
    examples = list(task_obj.splits[split])
    return task_obj, examples[:limit] if limit else examples


def spread(
    task: Task | str,
    model: Model | str = "smollm2",
    prompt: Prompt | None = None,
    *,
    n_formats: int = 10,
    seed: int = 0,
    split: str = "test",
    limit: int | None = None,
    cache: ResponseCache | str | Path | bool = True,
    batch_size: int = 32,
    mode: Mode = "auto",
    tracker: BudgetTracker | None = None,
) -> SpreadResult:
    """FormatSpread interval of ``prompt`` (default: the task's seed prompt) on the first ``limit`` examples
    of ``split`` — the API behind ``promptopt spread``."""
    task_obj, examples = _split_examples(task, split, limit)
    client = ModelClient(
        get_model(model), cache=open_cache(cache), budget=tracker or BudgetTracker(), batch_size=batch_size
    )
    evaluator = Evaluator(task_obj, client, mode=mode)
    return format_spread(
        evaluator, prompt or task_obj.seed_prompt(), n_formats=n_formats, seed=seed, examples=examples, split=split
    )


def robustness(
    task: Task | str,
    model: Model | str = "smollm2",
    prompt: Prompt | None = None,
    *,
    paraphrases: int = 8,
    proposer: Model | str | None = None,
    proposals: int | None = None,
    source: Source = "both",
    embedder: str = "auto",
    seed: int = 0,
    split: str = "test",
    limit: int | None = None,
    cache: ResponseCache | str | Path | bool = True,
    batch_size: int = 32,
    mode: Mode = "auto",
    tracker: BudgetTracker | None = None,
) -> RephrasingResult:
    """Rephrasing robustness of ``prompt`` (default: the task's seed prompt): its score as written and under up to
    ``paraphrases`` semantically equivalent instructions on the first ``limit`` examples of ``split`` — the API
    behind ``promptopt robustness``.

    The paraphrases (:func:`promptopt.optimizers.paraphrases.paraphrase_set`) are the ``proposer``'s (default:
    ``model``; ``proposals`` asks, default ``2 * paraphrases``) and the rule-based ones, screened for equivalence
    (``embedder``: ``auto``, ``minilm`` or ``tfidf``); ``source`` = ``rules`` needs no proposer calls.
    """
    task_obj, examples = _split_examples(task, split, limit)
    if paraphrases < 1:
        raise ConfigError(f"must be >= 1, got {paraphrases}.", field="paraphrases")
    tracker = tracker or BudgetTracker()
    cache_obj = open_cache(cache)
    model_obj = get_model(model)
    client = ModelClient(model_obj, cache=cache_obj, budget=tracker, batch_size=batch_size)
    start = prompt or task_obj.seed_prompt()
    writer = None
    if source != "rules":
        proposer_obj = model_obj if proposer is None or proposer == model else get_model(proposer)
        writer = Proposer(
            ModelClient(proposer_obj, cache=cache_obj, budget=tracker, role="proposer", batch_size=batch_size),
            temperature=0.9,
            max_tokens=96,
        )
    found = paraphrase_set(
        start,
        paraphrases,
        labels=task_obj.labels or (),
        proposer=writer,
        n_proposals=proposals if proposals is not None else 2 * paraphrases,
        source=source,
        bounds=Equivalence(embedder=embedder),
        seed=seed,
    )
    return rephrasing_spread(
        Evaluator(task_obj, client, mode=mode),
        start,
        [(p.source, p.text) for p in found.paraphrases],
        examples=examples,
        split=split,
        rejected=found.rejected,
        proposed=found.proposed,
    )
