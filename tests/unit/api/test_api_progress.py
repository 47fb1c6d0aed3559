"""``progress=True`` on :func:`promptopt.optimize` and :func:`promptopt.evaluate`: off by default, shown on stderr
when asked (plain lines when stderr is not a terminal, as under pytest), and the run's numbers are the same."""

from __future__ import annotations

import promptopt
from promptopt.testing import toy_model


def test_optimize_is_quiet_by_default(toy_task, capsys):
    promptopt.optimize(toy_task, "baseline", toy_model(), cache=":memory:")
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_optimize_with_progress_writes_lines_to_stderr(toy_task, capsys):
    quiet = promptopt.optimize(toy_task, "baseline", toy_model(), cache=":memory:")
    shown = promptopt.optimize(toy_task, "baseline", toy_model(), cache=":memory:", progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "trial 0 (full dev): " in captured.err and "test: seed prompt: 12/12 examples done" in captured.err
    assert shown.best_dev == quiet.best_dev and shown.n_trials == quiet.n_trials


def test_optimize_with_progress_keeps_the_callers_callbacks(toy_task):
    events: list[object] = []
    promptopt.optimize(toy_task, "baseline", toy_model(), cache=":memory:", progress=True, callbacks=[events.append])
    assert {type(e).__name__ for e in events} >= {"RunStarted", "TrialFinished", "RunFinished"}


def test_evaluate_with_progress(toy_task, capsys):
    result = promptopt.evaluate(toy_task, toy_model(), split="dev", cache=False, progress=True)
    assert result.n == len(toy_task.dev)
    assert capsys.readouterr().err.strip() == f"evaluate dev: {result.n}/{result.n} examples done"


def test_evaluate_still_takes_a_progress_function(toy_task, capsys):
    ticks: list[tuple[int, int]] = []
    promptopt.evaluate(toy_task, toy_model(), cache=False, progress=lambda done, total: ticks.append((done, total)))
    assert ticks and ticks[-1] == (len(toy_task.dev), len(toy_task.dev))
    assert capsys.readouterr().err == ""
