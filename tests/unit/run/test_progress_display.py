"""The progress display shared by the command line and ``progress=True``: bars where they can be redrawn, plain
lines elsewhere (a file, CI, a notebook without ipywidgets); never an error."""

from __future__ import annotations

import io
import sys

import pytest
from rich.console import Console

from promptopt import Budget, optimize
from promptopt.run.progress import _Bars, _Lines, can_redraw, progress_display
from promptopt.testing import toy_model


def console(**kwargs: object) -> tuple[Console, io.StringIO]:
    buf = io.StringIO()
    return Console(file=buf, width=100, **kwargs), buf  # type: ignore[arg-type]


def run_with(handler, toy_task) -> None:
    optimize(toy_task, "baseline", toy_model(), cache=":memory:", callbacks=[handler], budget=Budget(max_calls=500))


def test_disabled_yields_no_handler():
    with progress_display(False) as handler:
        assert handler is None


def test_a_file_gets_one_line_per_trial_and_per_test_evaluation(toy_task):
    con, buf = console()
    assert not can_redraw(con)
    with progress_display(console=con) as handler:
        assert isinstance(handler, _Lines)
        run_with(handler, toy_task)
    text = buf.getvalue()
    assert "\x1b[" not in text  # no cursor movement, no colours
    lines = text.splitlines()
    assert lines[0] == "promptopt: baseline started, 500 calls"
    assert lines[1].startswith("trial 0 (full dev): ") and "calls 12/500" in lines[1]
    assert lines[2:] == ["test: seed prompt: 12/12 examples done"]  # the best is the seed: scored once


def test_a_terminal_gets_the_bars(toy_task):
    con, buf = console(force_terminal=True)
    assert can_redraw(con)
    with progress_display(console=con) as handler:
        assert isinstance(handler, _Bars)
        run_with(handler, toy_task)
    assert "budget (calls)" in buf.getvalue()


def test_bars_can_be_forced_on_a_file(toy_task):
    con, buf = console()
    with progress_display(console=con, display="bars") as handler:
        run_with(handler, toy_task)
    assert "budget (calls)" in buf.getvalue()  # the final state, printed once


def test_a_notebook_without_ipywidgets_gets_lines(monkeypatch):
    monkeypatch.setitem(sys.modules, "ipywidgets", None)
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    con, _ = console(force_jupyter=True)
    assert con.is_jupyter and not can_redraw(con)
    with progress_display(console=con) as handler:
        assert isinstance(handler, _Lines)


@pytest.mark.parametrize("found", [True, False])
def test_a_notebook_redraws_only_with_ipywidgets(monkeypatch, found):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if found else None)
    con, _ = console(force_jupyter=True)
    assert can_redraw(con) is found
