"""The ``promptopt`` command line. It only translates options into the Python API.

Exit codes: 0 ok, 1 the run failed, 2 bad input (the message names the file/field and the fix).
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from typer.core import TyperGroup

try:  # recent typer vendors click
    from typer import _click as click
except ImportError:  # pragma: no cover - typer < 0.20 uses click itself
    import click  # type: ignore[no-redef]

from promptopt.core.exceptions import (
    ConfigError,
    MissingDependencyError,
    PromptOptError,
    TooManyErrors,
)

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2

OPTIONS = {
    "budget.max_calls": "--budget-calls",
    "budget.max_tokens": "--budget-tokens",
    "budget.max_cost": "--budget-cost",
    "budget.max_seconds": "--budget-seconds",
    "batch_size": "--batch-size",
    "cache": "--cache",
    "limit": "--limit",
    "max_errors": "--max-errors",
    "mode": "--mode",
    "model": "--model",
    "n_formats": "--formats",
    "proposer": "--proposer",
    "run_dir": "--runs-dir",
    "select": "--select",
    "split": "--split",
    "task": "--task",
}
"""API argument → the command-line option that sets it, so an error names what the user typed."""


def _print_error(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


class _Commands(TyperGroup):
    """The command group: a usage error (unknown option, bad option value) is one line and exit 2, like bad input."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except click.exceptions.ClickException as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help text already
                ctx = getattr(exc, "ctx", None)
                see = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                _print_error(escape(exc.format_message()) + see)
            sys.exit(EXIT_BAD_INPUT if isinstance(exc, click.exceptions.UsageError) else exc.exit_code)
        except typer.Abort:
            _print_error("aborted.")
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else EXIT_OK)


app = typer.Typer(
    name="promptopt",
    help="Find better prompts automatically: optimize, evaluate, list tasks/optimizers/models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Commands,
)
tasks_app = typer.Typer(help="Tasks shipped in tasks/ or found on PROMPTOPT_TASKS.", no_args_is_help=True)
optimizers_app = typer.Typer(help="Optimizers and presets.", no_args_is_help=True)
models_app = typer.Typer(help="Model specs.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(optimizers_app, name="optimizers")
app.add_typer(models_app, name="models")


def _fail(code: int, message: str) -> typer.Exit:
    _print_error(escape(message))
    return typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn`` mapping errors to exit codes: bad input → 2, anything else → 1."""
    try:
        return fn()
    except ConfigError as exc:
        option = OPTIONS.get(exc.field or "")
        shown = exc if option is None else ConfigError(exc.message, source=exc.source, field=option)
        raise _fail(EXIT_BAD_INPUT, str(shown)) from None
    except MissingDependencyError as exc:
        raise _fail(EXIT_BAD_INPUT, str(exc)) from None
    except PromptOptError as exc:
        raise _fail(EXIT_FAILED, str(exc)) from None
    except KeyboardInterrupt:
        raise _fail(
            EXIT_FAILED, "interrupted; finished evaluations are cached — continue with --resume <run-dir>."
        ) from None
    except Exception as exc:
        logging.getLogger("promptopt").debug("unexpected error", exc_info=True)
        raise _fail(EXIT_FAILED, f"{type(exc).__name__}: {exc} (run with --verbose for the traceback)") from None


def _parse_overrides(items: list[str], option: str) -> dict[str, Any]:
    """``key=value`` pairs of ``option``; values are parsed as YAML (numbers, booleans, null, [lists])."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"expected key=value, got {item!r}.", field=option)
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(
                f"cannot parse the value in {item!r}; quote it or fix the brackets.", field=option
            ) from None
    return parsed


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[Any], None] | None]:
    """A Rich progress display driven by runner events (budget bar + current evaluation bar)."""
    if not enabled:
        yield None
        return
    from promptopt.run.callbacks import EvaluationProgress, RunStarted, TrialFinished

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=err,
        transient=False,
    )
    live: dict[str, Any] = {"tracker": None, "budget": None, "eval": None, "label": None}

    def handler(event: Any) -> None:
        if isinstance(event, RunStarted):
            live["tracker"] = event.budget
            live["budget"] = progress.add_task("budget (calls)", total=event.budget.budget.max_calls, info="")
        elif isinstance(event, EvaluationProgress):
            if live["label"] != event.label:
                if live["eval"] is not None:
                    progress.remove_task(live["eval"])
                live["eval"] = progress.add_task(f"  {event.label}", total=event.total, info="")
                live["label"] = event.label
            progress.update(live["eval"], completed=event.done)
        elif isinstance(event, TrialFinished):
            progress.update(live["budget"], info=f"best dev {event.state.best().mean:.3f}")
        if live["tracker"] is not None:
            progress.update(live["budget"], completed=live["tracker"].limited().calls)

    with progress:
        yield handler


def _model(spec: str | None, api_base: str | None, model_opts: list[str], option: str = "--model") -> Any:
    """``spec`` (given as ``option``) built with the backend options (--api-base, --model-opt), or the spec string
    as is without any."""
    options = _parse_overrides(model_opts, "--model-opt")
    if api_base:
        options["api_base"] = api_base
    if spec is None or not options:
        return spec
    from promptopt.models import get_model

    try:
        return get_model(spec, **options)
    except TypeError as exc:
        raise ConfigError(f"model {spec!r} does not take these options ({exc}).", field="--model-opt") from None
    except ConfigError as exc:
        raise ConfigError(exc.message, source=exc.source, field=option if exc.field == "model" else exc.field) from None


def _prompt(path: Path | None) -> Any:
    """The prompt in ``path`` (--prompt), or None for the task's seed prompt."""
    if path is None:
        return None
    from promptopt.core.candidate import Prompt

    try:
        return Prompt.load(path)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(
            f"not a promptopt prompt ({type(exc).__name__}: {exc}); give an export directory, a run directory or "
            "a prompt .json written by promptopt.",
            source=str(path),
        ) from None


@contextmanager
def _resume_hint(run_dir: Path) -> Iterator[None]:
    """A run stopped by failed model calls says how to continue it."""
    try:
        yield
    except TooManyErrors as exc:
        raise TooManyErrors(f"{exc} Finished calls are cached: continue with --resume {run_dir}") from None


MAX_ERRORS_HELP = (
    "Stop (exit 1) when more model calls fail than this: a share like 20% (of at least 10 calls), a count like 5, "
    "or none."
)


def _setup_logging(verbose: bool) -> None:
    logging.getLogger("promptopt").setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        from rich.logging import RichHandler

        logging.getLogger("promptopt").addHandler(RichHandler(console=err, show_path=False))


# -- optimize ------------------------------------------------------------------------------------
@app.command()
def optimize(
    task_arg: Annotated[str | None, typer.Argument(metavar="[TASK]", help="Task name or directory.")] = None,
    task: Annotated[str | None, typer.Option("--task", "-t", help="Task name, directory or task.yaml.")] = None,
    optimizer: Annotated[
        str,
        typer.Option(
            "--optimizer",
            "-o",
            help="Optimizer or preset name, or preset .yaml (default auto: demos, instruction, soft prompt).",
        ),
    ] = "auto",
    model: Annotated[
        str, typer.Option("--model", "-m", help="Task model spec (see `promptopt models list`).")
    ] = "smollm2",
    proposer: Annotated[str | None, typer.Option(help="Model that writes prompts (default: the task model).")] = None,
    budget_calls: Annotated[int | None, typer.Option(help="Max model calls (cache hits are free).")] = None,
    budget_tokens: Annotated[int | None, typer.Option(help="Max prompt+completion tokens.")] = None,
    budget_cost: Annotated[float | None, typer.Option(help="Max cost in USD.")] = None,
    budget_seconds: Annotated[float | None, typer.Option(help="Max wall time in seconds.")] = None,
    seed: Annotated[int, typer.Option(help="Run seed (same seed + same cache → same result).")] = 0,
    runs_dir: Annotated[Path, typer.Option(help="Where new run directories are created.")] = Path("runs"),
    resume: Annotated[
        Path | None,
        typer.Option(help="Continue the run in this run directory (give --api-base/--model-opt again if it had any)."),
    ] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Optimizer setting key=value (repeatable).")] = [],  # noqa: B006
    api_base: Annotated[str | None, typer.Option(help="API base URL for litellm models.")] = None,
    model_opt: Annotated[list[str], typer.Option(help="Backend option key=value (repeatable).")] = [],  # noqa: B006
    cache: Annotated[Path | None, typer.Option(help="Response cache file (default ~/.cache/promptopt).")] = None,
    max_errors: Annotated[str, typer.Option(help=MAX_ERRORS_HELP)] = "20%",
    no_test: Annotated[bool, typer.Option("--no-test", help="Skip the held-out test evaluation.")] = False,
    select: Annotated[
        str,
        typer.Option(
            help="'best' (default): the best dev score wins; 'significant': replace the seed prompt only if the "
            "paired dev gain's 95% CI is above 0."
        ),
    ] = "best",
    batch_size: Annotated[int, typer.Option(help="Requests per model batch.")] = 32,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log every trial.")] = False,
) -> None:
    """Optimize a task's prompt; prints seed vs best dev score (95% CIs), the held-out test score and the spend."""
    _setup_logging(verbose)

    def run() -> Any:
        from promptopt.api import optimize as run_optimize
        from promptopt.api import resume as run_resume
        from promptopt.models.budget import Budget, ErrorLimit
        from promptopt.optimizers.presets import load_optimizer
        from promptopt.run.rundir import new_run_dir, read_run_config

        budget = Budget(
            max_calls=budget_calls, max_tokens=budget_tokens, max_cost=budget_cost, max_seconds=budget_seconds
        )
        limit = ErrorLimit.of(max_errors)
        with _progress(not quiet and not json_out) as handler:
            callbacks = [handler] if handler else []
            if resume is not None:
                saved = read_run_config(resume)
                with _resume_hint(resume):
                    return run_resume(
                        resume,
                        callbacks=callbacks,
                        budget=None if budget.unlimited else budget,
                        max_errors=limit,
                        model=_model(saved["model"], api_base, model_opt),
                        proposer=_model(saved["proposer"], api_base, model_opt, "--proposer"),
                    )
            task_name = task or task_arg
            if not task_name:
                raise ConfigError(
                    "give a task: promptopt optimize --task sst2 (see `promptopt tasks list`).", field="--task"
                )
            from promptopt.core.taskfile import load_task

            task_obj = load_task(task_name)
            opt = load_optimizer(optimizer, **_parse_overrides(set_, "--set"))
            model_obj = _model(model, api_base, model_opt)
            proposer_obj = _model(proposer, api_base, model_opt, "--proposer")
            run_dir = new_run_dir(runs_dir, task_obj.name, optimizer)
            with _resume_hint(run_dir):
                return run_optimize(
                    task_obj.source if task_obj.source != "<python>" else task_obj,
                    opt,
                    model_obj,
                    proposer=proposer_obj,
                    budget=budget,
                    seed=seed,
                    run_dir=run_dir,
                    cache=cache if cache is not None else True,
                    callbacks=callbacks,
                    evaluate_test=not no_test,
                    batch_size=batch_size,
                    select=select,  # type: ignore[arg-type]
                    max_errors=limit,
                )

    result = guarded(run)
    if json_out:
        out.print_json(json.dumps(result.to_dict()))
    else:
        out.print(result.format(), highlight=False, soft_wrap=True)


# -- evaluate ------------------------------------------------------------------------------------
@app.command()
def evaluate(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name, directory or task.yaml.")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model spec.")] = "smollm2",
    prompt: Annotated[Path | None, typer.Option(help="Run directory, exported prompt or prompt .json.")] = None,
    split: Annotated[str, typer.Option(help="train, dev or test.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Only the first N examples of the split.")] = None,
    mode: Annotated[str, typer.Option(help="auto, score (label log-likelihood) or generate.")] = "auto",
    api_base: Annotated[str | None, typer.Option(help="API base URL for litellm models.")] = None,
    model_opt: Annotated[list[str], typer.Option(help="Backend option key=value (repeatable).")] = [],  # noqa: B006
    cache: Annotated[Path | None, typer.Option(help="Response cache file (default ~/.cache/promptopt).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the response cache.")] = False,
    max_errors: Annotated[str, typer.Option(help=MAX_ERRORS_HELP)] = "20%",
    batch_size: Annotated[int, typer.Option(help="Requests per model batch.")] = 32,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    show_errors: Annotated[int, typer.Option(help="Print up to N wrong or failed examples.")] = 0,
) -> None:
    """Score a prompt (default: the task's seed prompt) on a split, with a 95% CI and the calls spent."""

    def run() -> tuple[Any, Any]:
        from promptopt.api import evaluate as run_evaluate
        from promptopt.core.taskfile import load_task
        from promptopt.models.budget import BudgetTracker
        from promptopt.run.callbacks import EvaluationProgress

        task_obj = load_task(task)
        candidate = _prompt(prompt)
        model_obj = _model(model, api_base, model_opt)
        tracker = BudgetTracker()
        with _progress(not quiet and not json_out) as handler:

            def tick(done: int, total: int) -> None:
                if handler:
                    handler(EvaluationProgress(label=f"evaluate {split}", done=done, total=total))

            result = run_evaluate(
                task_obj,
                model_obj,
                candidate,
                split=split,
                limit=limit,
                cache=False if no_cache else (cache if cache is not None else True),
                batch_size=batch_size,
                mode=mode,  # type: ignore[arg-type]
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


# -- spread --------------------------------------------------------------------------------------
@app.command()
def spread(
    task: Annotated[str, typer.Option("--task", "-t", help="Task name, directory or task.yaml.")],
    prompt: Annotated[Path | None, typer.Option(help="Run directory, exported prompt or prompt .json.")] = None,
    model: Annotated[str, typer.Option("--model", "-m", help="Model spec.")] = "smollm2",
    formats: Annotated[int, typer.Option(help="Formats to score (the first is the prompt as written).")] = 10,
    split: Annotated[str, typer.Option(help="train, dev or test.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Only the first N examples of the split.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the format sample.")] = 0,
    mode: Annotated[str, typer.Option(help="auto, score (label log-likelihood) or generate.")] = "auto",
    cache: Annotated[Path | None, typer.Option(help="Response cache file (default ~/.cache/promptopt).")] = None,
    batch_size: Annotated[int, typer.Option(help="Requests per model batch.")] = 32,
    max_errors: Annotated[str, typer.Option(help=MAX_ERRORS_HELP)] = "20%",
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """FormatSpread: score a prompt under N plausible formats (separators, casing, field names, spacing,
    option markers) and print the interval (min, median, max)."""

    def run() -> Any:
        from promptopt.api import check_mode
        from promptopt.api import spread as run_spread
        from promptopt.models.budget import BudgetTracker, ErrorLimit

        check_mode(mode)
        return run_spread(
            task,
            model,
            _prompt(prompt),
            n_formats=formats,
            seed=seed,
            split=split,
            limit=limit,
            cache=cache if cache is not None else True,
            batch_size=batch_size,
            mode=mode,  # type: ignore[arg-type]
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


# -- listings ------------------------------------------------------------------------------------
@tasks_app.command("list")
def tasks_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List available tasks."""
    from promptopt.core.taskfile import available_tasks

    found = available_tasks()
    if json_out:
        out.print_json(json.dumps({k: str(v) for k, v in found.items()}))
        return
    table = Table("task", "path")
    for name, path in found.items():
        table.add_row(name, str(path.parent))
    out.print(table)


@tasks_app.command("show")
def tasks_show(name: str, json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show a task: type, labels, metric, parser, split sizes, seed instruction and a rendered example."""
    from promptopt.core.taskfile import load_task

    task = guarded(lambda: load_task(name))
    summary = task.summary()
    ex = task.dev[0]
    summary["example"] = {"messages": [m.to_dict() for m in task.seed_prompt().render(ex)], "target": ex.target}
    if json_out:
        out.print_json(json.dumps(summary, default=str))
        return
    for key, value in summary.items():
        if key != "example":
            out.print(f"[bold]{key}[/]: {value}", highlight=False)
    out.print("[bold]seed prompt on the first dev example[/]:")
    for m in summary["example"]["messages"]:
        out.print(f"  [{m['role']}] {m['content']}", highlight=False, markup=False)
    out.print(f"  [target] {ex.target}", highlight=False, markup=False)


@optimizers_app.command("list")
def optimizers_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List registered optimizers and presets."""
    from promptopt.optimizers import OPTIMIZERS
    from promptopt.optimizers.presets import available_presets, read_preset

    rows = [
        {"name": n, "kind": "optimizer", "optimizer": n, "description": _first_doc_line(OPTIMIZERS.get(n))}
        for n in OPTIMIZERS.names()
    ]
    for name, path in available_presets().items():
        spec = guarded(lambda path=path: read_preset(path))
        rows.append(
            {"name": name, "kind": "preset", "optimizer": spec["optimizer"], "description": spec.get("description", "")}
        )
    if json_out:
        out.print_json(json.dumps(rows))
        return
    table = Table("name", "kind", "optimizer", "description")
    for r in rows:
        table.add_row(r["name"], r["kind"], r["optimizer"], r["description"])
    out.print(table)


@optimizers_app.command("show")
def optimizers_show(name: str) -> None:
    """Show an optimizer's or preset's full configuration."""
    from promptopt.optimizers.presets import load_optimizer

    opt = guarded(lambda: load_optimizer(name))
    out.print(f"[bold]{name}[/] → {type(opt).__name__}: {_first_doc_line(type(opt))}", highlight=False)
    out.print_json(json.dumps(opt.to_config()))


@models_app.command("list")
def models_list(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List the model spec forms."""
    from promptopt.models import describe_models

    rows = describe_models()
    if json_out:
        out.print_json(json.dumps(rows))
        return
    table = Table("spec", "backend", "description")
    for r in rows:
        table.add_row(r["spec"], r["backend"], r["description"])
    out.print(table)


def _first_doc_line(obj: object) -> str:
    doc = (obj.__doc__ or "").strip() or (sys.modules[obj.__module__].__doc__ or "").strip()  # type: ignore[attr-defined]
    return doc.splitlines()[0] if doc else ""


def main() -> None:
    app()
