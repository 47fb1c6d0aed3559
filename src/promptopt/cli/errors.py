"""The command line's consoles, exit codes and error reporting: an error is one line naming the option the user
typed, and exit 1 (the run failed) or 2 (bad input)."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import typer
from rich.console import Console
from rich.markup import escape

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


def print_error(message: str) -> None:
    """``message`` (Rich markup) as one ``error:`` line on stderr."""
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)


def fail(code: int, message: str) -> typer.Exit:
    """Print ``message`` (plain text) as an error; the exit to raise with ``code``."""
    print_error(escape(message))
    return typer.Exit(code)


def guarded(fn: Callable[[], T]) -> T:
    """Run ``fn`` mapping errors to exit codes: bad input → 2, anything else → 1."""
    try:
        return fn()
    except ConfigError as exc:
        option = OPTIONS.get(exc.field or "")
        shown = exc if option is None else ConfigError(exc.message, source=exc.source, field=option)
        raise fail(EXIT_BAD_INPUT, str(shown)) from None
    except MissingDependencyError as exc:
        raise fail(EXIT_BAD_INPUT, str(exc)) from None
    except PromptOptError as exc:
        raise fail(EXIT_FAILED, str(exc)) from None
    except KeyboardInterrupt:
        raise fail(
            EXIT_FAILED, "interrupted; finished evaluations are cached — continue with --resume <run-dir>."
        ) from None
    except Exception as exc:
        logging.getLogger("promptopt").debug("unexpected error", exc_info=True)
        raise fail(EXIT_FAILED, f"{type(exc).__name__}: {exc} (run with --verbose for the traceback)") from None


@contextmanager
def resume_hint(run_dir: Path) -> Iterator[None]:
    """A run stopped by failed model calls says how to continue it."""
    try:
        yield
    except TooManyErrors as exc:
        raise TooManyErrors(f"{exc} Finished calls are cached: continue with --resume {run_dir}") from None


def command_line(ctx: typer.Context) -> str:
    """The running command as one could type it again (for provenance): ``promptopt <command>``, its arguments and
    every option given a value other than its default, shell-quoted. Built from the parsed parameters, so it is
    right however the command was invoked (a shell, ``python -m promptopt.cli``, a test's CliRunner)."""
    parts = ["promptopt", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name or "")
        if param.param_type_name == "argument":
            parts.append(str(value))
            continue
        if value is None or value == param.default or value in ([], ()):
            continue
        flag = param.opts[0]
        if getattr(param, "is_flag", False):
            parts.append(flag if value else (param.secondary_opts or [flag])[0])
        elif isinstance(value, list | tuple):
            for v in value:
                parts += [flag, str(v)]
        else:
            parts += [flag, str(value)]
    return shlex.join(parts)
