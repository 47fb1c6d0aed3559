"""The ``promptopt`` command line. It only translates options into the Python API.

Exit codes: 0 ok, 1 the run failed, 2 bad input (the message names the file/field and the fix).

The commands live by job: :mod:`promptopt.cli.run` (optimize, evaluate, spread), :mod:`promptopt.cli.catalog`
(tasks, optimizers, models); their options, with the API's defaults, in :mod:`promptopt.cli.options`; error
reporting in :mod:`promptopt.cli.errors`, progress bars in :mod:`promptopt.cli.progress`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

try:  # recent typer vendors click
    from typer import _click as click
except ImportError:  # pragma: no cover - typer < 0.20 uses click itself
    import click  # type: ignore[no-redef]

from promptopt.cli.catalog import models_app, optimizers_app, tasks_app
from promptopt.cli.compare import compare
from promptopt.cli.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, print_error
from promptopt.cli.report import report
from promptopt.cli.robustness import robustness
from promptopt.cli.run import evaluate, optimize, spread
from promptopt.cli.worker import worker

__all__ = ["app", "evaluate", "main", "optimize", "spread"]


class _Commands(TyperGroup):
    """The command group: a usage error (unknown option, bad option value) is one line and exit 2, like bad input."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(
                args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra
            )
        try:
            code = super().main(
                args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra
            )
        except click.exceptions.ClickException as exc:
            if type(exc).__name__ != "NoArgsIsHelpError":  # that one has printed the help text already
                ctx = getattr(exc, "ctx", None)
                see = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
                print_error(escape(exc.format_message()) + see)
            sys.exit(EXIT_BAD_INPUT if isinstance(exc, click.exceptions.UsageError) else exc.exit_code)
        except typer.Abort:
            print_error("aborted.")
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
DISTRIBUTION = "promptopt-toolkit"
"""The name promptopt is installed under (the PyPI name ``promptopt`` belongs to another project)."""


def version() -> str:
    """The installed distribution's version, or ``promptopt.__version__`` when it is not installed (a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed_version

    try:
        return installed_version(DISTRIBUTION)
    except PackageNotFoundError:
        from promptopt import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"promptopt {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version and exit.", callback=_print_version, is_eager=True, expose_value=True
        ),
    ] = False,
) -> None:
    """Find better prompts automatically: optimize, evaluate, list tasks/optimizers/models."""


app.command()(optimize)
app.command()(evaluate)
app.command()(spread)
app.command()(robustness)
app.command()(report)
app.command()(compare)
app.command()(worker)
app.add_typer(tasks_app, name="tasks")
app.add_typer(optimizers_app, name="optimizers")
app.add_typer(models_app, name="models")


def main() -> None:
    app()
