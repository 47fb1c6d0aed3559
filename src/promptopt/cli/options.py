"""Every command-line option, declared once as an ``Annotated`` alias the commands reuse, and the values that turn
options into Python API arguments.

An option that mirrors an argument of :func:`promptopt.api.optimize`, :func:`~promptopt.api.evaluate` or
:func:`~promptopt.api.spread` takes its default from that function's signature (:data:`OPTIMIZE`, :data:`EVALUATE`,
:data:`SPREAD`), so the command line and the API cannot disagree; ``tests/unit/cli/test_cli_defaults.py`` checks it and
lists the options that differ on purpose.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from promptopt import api
from promptopt.core.exceptions import ConfigError
from promptopt.models.budget import Budget, ErrorLimit


def api_defaults(fn: Callable[..., Any]) -> dict[str, Any]:
    """``fn``'s keyword defaults by argument name (arguments without a default are left out)."""
    return {n: p.default for n, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}


def limit_text(value: ErrorLimit | float | int | str | None) -> str:
    """An error limit as ``--max-errors`` takes it: ``20%``, ``5`` or ``none``."""
    limit = ErrorLimit.of(value)
    if limit.count is not None:
        return str(limit.count)
    return f"{limit.share * 100:g}%" if limit.share is not None else "none"


OPTIMIZE = api_defaults(api.optimize)
EVALUATE = api_defaults(api.evaluate)
SPREAD = api_defaults(api.spread)
BUDGET = Budget()
"""The API's defaults the options take (``BUDGET``: the limits of ``Budget()``, the API's ``budget=None``)."""

# -- the task, the prompt, the models ------------------------------------------------------------------------------
_TASK = typer.Option("--task", "-t", help="Task name, directory or task.yaml.")
TaskName = Annotated[str, _TASK]
OptionalTaskName = Annotated[str | None, _TASK]
"""``optimize`` also takes the task as an argument, or none with --resume."""
TaskArgument = Annotated[str | None, typer.Argument(metavar="[TASK]", help="Task name or directory.")]
PromptPath = Annotated[Path | None, typer.Option("--prompt", help="Run directory, exported prompt or prompt .json.")]
TaskModel = Annotated[str, typer.Option("--model", "-m", help="Task model spec (see `promptopt models list`).")]
ModelSpec = Annotated[str, typer.Option("--model", "-m", help="Model spec.")]
Proposer = Annotated[
    str | None, typer.Option("--proposer", help="Model that writes prompts (default: the task model).")
]
ApiBase = Annotated[
    list[str] | None,
    typer.Option("--api-base", help="API base URL for litellm models (repeat it to balance over several endpoints)."),
]
ModelOpts = Annotated[list[str], typer.Option("--model-opt", help="Backend option key=value (repeatable).")]

# -- the optimizer and its run ---------------------------------------------------------------------------------------
OptimizerName = Annotated[
    str,
    typer.Option(
        "--optimizer",
        "-o",
        help="Optimizer or preset name, or preset .yaml (default auto: demos, instruction, soft prompt).",
    ),
]
Settings = Annotated[list[str], typer.Option("--set", help="Optimizer setting key=value (repeatable).")]
BudgetCalls = Annotated[int | None, typer.Option("--budget-calls", help="Max model calls (cache hits are free).")]
BudgetTokens = Annotated[int | None, typer.Option("--budget-tokens", help="Max prompt+completion tokens.")]
BudgetCost = Annotated[float | None, typer.Option("--budget-cost", help="Max cost in USD.")]
BudgetSeconds = Annotated[float | None, typer.Option("--budget-seconds", help="Max wall time in seconds.")]
RunSeed = Annotated[int, typer.Option("--seed", help="Run seed (same seed + same cache → same result).")]
RunsDir = Annotated[Path, typer.Option("--runs-dir", help="Where new run directories are created.")]
Resume = Annotated[
    Path | None,
    typer.Option(
        "--resume", help="Continue the run in this run directory (give --api-base/--model-opt again if it had any)."
    ),
]
NoTest = Annotated[bool, typer.Option("--no-test", help="Skip the held-out test evaluation.")]
Select = Annotated[
    str,
    typer.Option(
        "--select",
        help="'best' (default): the best dev score wins; 'significant': replace the seed prompt only if the "
        "paired dev gain's 95% CI is above 0.",
    ),
]

# -- evaluation -------------------------------------------------------------------------------------------------------
Split = Annotated[str, typer.Option("--split", help="train, dev or test.")]
Limit = Annotated[int | None, typer.Option("--limit", help="Only the first N examples of the split.")]
EvalMode = Annotated[str, typer.Option("--mode", help="auto, score (label log-likelihood) or generate.")]
Formats = Annotated[int, typer.Option("--formats", help="Formats to score (the first is the prompt as written).")]
FormatSeed = Annotated[int, typer.Option("--seed", help="Seed of the format sample.")]
ShowErrors = Annotated[int, typer.Option("--show-errors", help="Print up to N wrong or failed examples.")]

# -- model calls ------------------------------------------------------------------------------------------------------
CachePath = Annotated[
    str | None,
    typer.Option("--cache", help="Response cache file (default ~/.cache/promptopt), or a postgresql:// URL (shared)."),
]
"""Unset: the API's ``cache`` default (``True``, the default cache file) — a path option cannot hold ``True``."""
StudyStorage = Annotated[
    str | None, typer.Option("--storage", help="structure_search: Optuna storage URL shared by workers.")
]
StudyName = Annotated[str | None, typer.Option("--study", help="structure_search: the shared study's name.")]
NoCache = Annotated[bool, typer.Option("--no-cache", help="Do not read or write the response cache.")]
BatchSize = Annotated[int, typer.Option("--batch-size", help="Requests per model batch.")]
MAX_ERRORS_HELP = (
    "Stop (exit 1) when more model calls fail than this: a share like 20% (of at least 10 calls), a count like 5, "
    "or none."
)
MaxErrors = Annotated[str, typer.Option("--max-errors", help=MAX_ERRORS_HELP)]
OPTIMIZE_MAX_ERRORS = limit_text(OPTIMIZE["max_errors"])
EVALUATE_MAX_ERRORS = limit_text(EVALUATE["max_errors"])
"""``--max-errors``' defaults: the API's (``0.2`` → ``20%``); ``spread`` takes evaluate's."""

# -- output ---------------------------------------------------------------------------------------------------------
JsonOut = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
ListingJson = Annotated[bool, typer.Option("--json")]
"""``--json`` of the listings (tasks, optimizers, models)."""
QuietBars = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
QuietBar = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v", help="Log every trial.")]


# -- option values → API arguments ---------------------------------------------------------------------------------
def parse_overrides(items: list[str], option: str) -> dict[str, Any]:
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


def build_model(
    spec: str | None, api_base: str | list[str] | None, model_opts: list[str], option: str = "--model"
) -> Any:
    """``spec`` (given as ``option``) built with the backend options (--api-base, once or several times, and
    --model-opt), or the spec string as is without any."""
    options = parse_overrides(model_opts, "--model-opt")
    if api_base:
        options["api_base"] = api_base[0] if isinstance(api_base, list) and len(api_base) == 1 else api_base
    if spec is None or not options:
        return spec
    from promptopt.models import get_model

    try:
        return get_model(spec, **options)
    except TypeError as exc:
        raise ConfigError(f"model {spec!r} does not take these options ({exc}).", field="--model-opt") from None
    except ConfigError as exc:
        raise ConfigError(exc.message, source=exc.source, field=option if exc.field == "model" else exc.field) from None


def load_prompt(path: Path | None) -> Any:
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
