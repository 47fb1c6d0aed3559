"""What the command line shows while it works: the Rich progress bars driven by runner events, and --verbose logging."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from promptopt.cli.errors import err


@contextmanager
def progress(enabled: bool) -> Iterator[Callable[[Any], None] | None]:
    """A Rich progress display driven by runner events (budget bar + current evaluation bar)."""
    if not enabled:
        yield None
        return
    from promptopt.run.callbacks import EvaluationProgress, RunStarted, TrialFinished

    bars = Progress(
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
            live["budget"] = bars.add_task("budget (calls)", total=event.budget.budget.max_calls, info="")
        elif isinstance(event, EvaluationProgress):
            if live["label"] != event.label:
                if live["eval"] is not None:
                    bars.remove_task(live["eval"])
                live["eval"] = bars.add_task(f"  {event.label}", total=event.total, info="")
                live["label"] = event.label
            bars.update(live["eval"], completed=event.done)
        elif isinstance(event, TrialFinished):
            bars.update(live["budget"], info=f"best dev {event.state.best().mean:.3f}")
        if live["tracker"] is not None:
            bars.update(live["budget"], completed=live["tracker"].limited().calls)

    with bars:
        yield handler


def setup_logging(verbose: bool) -> None:
    """Warnings only, or (``--verbose``) every debug record of promptopt on stderr."""
    logging.getLogger("promptopt").setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        from rich.logging import RichHandler

        logging.getLogger("promptopt").addHandler(RichHandler(console=err, show_path=False))
