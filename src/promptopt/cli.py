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
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from promptopt.exceptions import ConfigError, MissingDependencyError, PromptOptError, UnknownComponentError

app = typer.Typer(
    name="promptopt",
    help="Find better prompts automatically: optimize, evaluate, list tasks/optimizers/models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
tasks_app = typer.Typer(help="Tasks shipped in tasks/ or found on PROMPTOPT_TASKS.", no_args_is_help=True)
optimizers_app = typer.Typer(help="Optimizers and presets.", no_args_is_help=True)
models_app = typer.Typer(help="Model specs.", no_args_is_help=True)
app.add_typer(tasks_app, name="tasks")
app.add_typer(optimizers_app, name="optimizers")
app.add_typer(models_app, name="models")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _fail(code: int, message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn`` mapping errors to exit codes: bad input → 2, anything else → 1."""
    try:
        return fn()
    except (ConfigError, UnknownComponentError, MissingDependencyError) as exc:
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


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are parsed as YAML scalars (numbers, booleans, lists)."""
    import yaml

    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected key=value, got {item!r}.", field="--set")
        parsed[key.strip()] = yaml.safe_load(value)
    return parsed


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[Any], None] | None]:
    """A Rich progress display driven by runner events (budget bar + current evaluation bar)."""
    if not enabled:
        yield None
        return
    from promptopt.callbacks import EvaluationProgress, RunStarted, TrialFinished

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


def _model_options(api_base: str | None, model_opts: list[str]) -> dict[str, Any]:
    opts = _parse_overrides(model_opts)
    if api_base:
        opts["api_base"] = api_base
    return opts


def _check_mode(mode: str) -> None:
    if mode not in ("auto", "score", "generate"):
        raise ConfigError(f"unknown mode {mode!r}; use auto, score or generate.", field="--mode")


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
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this run directory.")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="Optimizer setting key=value (repeatable).")] = [],  # noqa: B006
    api_base: Annotated[str | None, typer.Option(help="API base URL for litellm models.")] = None,
    model_opt: Annotated[list[str], typer.Option(help="Backend option key=value (repeatable).")] = [],  # noqa: B006
    cache: Annotated[Path | None, typer.Option(help="Response cache file (default ~/.cache/promptopt).")] = None,
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
        from promptopt.budget import Budget
        from promptopt.models import get_model
        from promptopt.presets import load_optimizer
        from promptopt.runner import new_run_dir
        from promptopt.runner import optimize as run_optimize
        from promptopt.runner import resume as run_resume

        budget = Budget(
            max_calls=budget_calls, max_tokens=budget_tokens, max_cost=budget_cost, max_seconds=budget_seconds
        )
        with _progress(not quiet and not json_out) as handler:
            callbacks = [handler] if handler else []
            if resume is not None:
                return run_resume(resume, callbacks=callbacks, budget=None if budget.unlimited else budget)
            task_name = task or task_arg
            if not task_name:
                raise ConfigError(
                    "give a task: promptopt optimize --task sst2 (see `promptopt tasks list`).", field="--task"
                )
            from promptopt.taskfile import load_task

            task_obj = load_task(task_name)
            opt = load_optimizer(optimizer, **_parse_overrides(set_))
            options = _model_options(api_base, model_opt)
            model_obj: Any = get_model(model, **options) if options else model
            proposer_obj: Any = get_model(proposer, **options) if (proposer and options) else proposer
            run_dir = new_run_dir(runs_dir, task_obj.name, optimizer)
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
    batch_size: Annotated[int, typer.Option(help="Requests per model batch.")] = 32,
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    show_errors: Annotated[int, typer.Option(help="Print up to N wrong or failed examples.")] = 0,
) -> None:
    """Score a prompt (default: the task's seed prompt) on a split, with a 95% CI and the calls spent."""

    def run() -> tuple[Any, Any]:
        from promptopt.budget import BudgetTracker
        from promptopt.callbacks import EvaluationProgress
        from promptopt.candidate import Prompt
        from promptopt.models import get_model
        from promptopt.runner import evaluate as run_evaluate
        from promptopt.taskfile import load_task

        _check_mode(mode)
        task_obj = load_task(task)
        candidate = Prompt.load(prompt) if prompt is not None else None
        model_obj = get_model(model, **_model_options(api_base, model_opt))
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
    json_out: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """FormatSpread: score a prompt under N plausible formats (separators, casing, field names, spacing,
    option markers) and print the interval (min, median, max)."""

    def run() -> Any:
        from promptopt.candidate import Prompt
        from promptopt.formats import spread as run_spread

        _check_mode(mode)
        return run_spread(
            task,
            model,
            Prompt.load(prompt) if prompt is not None else None,
            n_formats=formats,
            seed=seed,
            split=split,
            limit=limit,
            cache=cache if cache is not None else True,
            batch_size=batch_size,
            mode=mode,  # type: ignore[arg-type]
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
    from promptopt.taskfile import available_tasks

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
    from promptopt.taskfile import load_task

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
    from promptopt.presets import available_presets, read_preset

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
    from promptopt.presets import load_optimizer

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


if __name__ == "__main__":
    main()
