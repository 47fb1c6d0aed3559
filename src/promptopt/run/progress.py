"""What a run shows while it works, driven by the runner's events: the command line's progress bars and the Python
API's ``progress=True`` (:func:`promptopt.optimize`, :func:`promptopt.evaluate`).

On a terminal, or in a notebook with ipywidgets, it is a Rich display (a budget bar and the evaluation under way);
anywhere else (a log file, CI, a notebook without ipywidgets) it writes one plain line per trial and per finished
evaluation instead of redrawing bars, so it never breaks or floods the output.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Literal

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from promptopt.run.callbacks import EvaluationProgress, Event, RunStarted, TrialFinished

if TYPE_CHECKING:
    from promptopt.models.budget import BudgetTracker

Display = Literal["auto", "bars", "lines"]
Handler = Callable[[Event], None]


def can_redraw(console: Console) -> bool:
    """Whether ``console`` can redraw bars in place: a terminal, or a notebook with ipywidgets."""
    if console.is_jupyter:
        return importlib.util.find_spec("ipywidgets") is not None
    return console.is_terminal and not console.is_dumb_terminal


@contextmanager
def progress_display(
    enabled: bool = True, *, console: Console | None = None, display: Display = "auto"
) -> Iterator[Handler | None]:
    """A callback showing a run's progress on ``console`` (default: stderr) while the block runs; None when not
    ``enabled``. ``display``: ``"bars"`` (Rich progress bars), ``"lines"`` (one plain line per trial and per finished
    evaluation) or ``"auto"`` (bars where they can be redrawn, see :func:`can_redraw`; lines elsewhere)."""
    if not enabled:
        yield None
        return
    console = console or Console(stderr=True)
    if display == "lines" or (display == "auto" and not can_redraw(console)):
        yield _Lines(console)
        return
    bars = _Bars(console)
    with bars.progress:
        yield bars


class _Bars:
    """A budget bar (calls) and a bar for the evaluation under way."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        self.tracker: BudgetTracker | None = None
        self.budget: TaskID | None = None
        self.current: TaskID | None = None
        self.label: str | None = None

    def __call__(self, event: Event) -> None:
        bars = self.progress
        if isinstance(event, RunStarted):
            self.tracker = event.budget
            self.budget = bars.add_task("budget (calls)", total=event.budget.budget.max_calls, info="")
        elif isinstance(event, EvaluationProgress):
            if self.label != event.label or self.current is None:
                if self.current is not None:
                    bars.remove_task(self.current)
                self.current = bars.add_task(f"  {event.label}", total=event.total, info="")
                self.label = event.label
            bars.update(self.current, completed=event.done)
        elif isinstance(event, TrialFinished) and self.budget is not None:
            bars.update(self.budget, info=f"best dev {event.state.best().mean:.3f}")
        if self.tracker is not None and self.budget is not None:
            bars.update(self.budget, completed=self.tracker.limited().calls)


class _Lines:
    """One line per trial and per finished evaluation outside the trials (test scores, ``evaluate``)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.tracker: BudgetTracker | None = None
        self.finished: set[str] = set()

    def write(self, text: str) -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def __call__(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.tracker = event.budget
            limit = event.budget.budget.max_calls
            self.write(
                f"promptopt: {event.config.get('optimizer', 'run')} started" + (f", {limit} calls" if limit else "")
            )
        elif isinstance(event, TrialFinished):
            r = event.record
            where = "full dev" if r.full else "dev minibatch"
            score = f"{r.mean:.3f} (n={r.result.n})" if r.result is not None else f"failed: {r.error}"
            limit = event.budget.budget.max_calls
            calls = f"{r.calls_so_far}/{limit}" if limit else str(r.calls_so_far)
            best = event.state.best().mean
            self.write(f"trial {r.trial} ({where}): {score}; best dev {best:.3f}; calls {calls}")
        elif (
            isinstance(event, EvaluationProgress)
            and not event.label.startswith("trial")
            and event.done >= event.total
            and event.label not in self.finished
        ):
            self.finished.add(event.label)
            self.write(f"{event.label}: {event.done}/{event.total} examples done")
