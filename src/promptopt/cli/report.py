"""``promptopt report``: a run directory — or a ``promptopt compare`` directory — as one self-contained HTML page
(:func:`promptopt.report.write_run_report`, :func:`~promptopt.report.write_compare_report`), viewable offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from promptopt.cli.errors import guarded, out
from promptopt.core.exceptions import ConfigError

RunDirArgument = Annotated[
    Path,
    typer.Argument(
        metavar="RUN_DIR", help="A run directory made by promptopt optimize, or a promptopt compare --out directory."
    ),
]
ReportOut = Annotated[Path | None, typer.Option("--out", help="Where to write the page (default RUN_DIR/report.html).")]


def report(run_dir: RunDirArgument, out_file: ReportOut = None) -> None:
    """Write an HTML report of a run (score vs calls, candidates, spend, seed vs best on test, the best prompt) or of
    a compare (every run's curve on one plot, the leaderboard, a page per run)."""
    from promptopt.report import write_compare_report, write_run_report
    from promptopt.report.compare_report import COMPARE_FILE

    def write() -> Path:
        try:
            if (run_dir / COMPARE_FILE).is_file():
                return write_compare_report(run_dir, out_file)
            return write_run_report(run_dir, out_file)
        except ConfigError as exc:
            field = "--out" if exc.field == "out" else exc.field
            raise ConfigError(exc.message, source=exc.source, field=field) from None

    path = guarded(write)
    out.print(str(path), highlight=False, soft_wrap=True)
