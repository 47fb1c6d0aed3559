"""The command line's defaults are the Python API's: every option of ``optimize``, ``evaluate`` and ``spread`` that
mirrors an API argument has that argument's default; the options that differ on purpose, or have no counterpart,
are listed here with the reason."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import pytest
import typer

from promptopt import api
from promptopt.cli.app import app
from promptopt.models.budget import Budget, BudgetTracker, ErrorLimit

API: dict[str, Callable[..., Any]] = {
    "optimize": api.optimize,
    "evaluate": api.evaluate,
    "spread": api.spread,
    "robustness": api.robustness,
}

RENAMED = {
    "spread": {"formats": "n_formats"},
}
"""command → CLI parameter → the API argument of another name it sets."""

BUDGET_OPTIONS = {
    "budget_calls": "max_calls",
    "budget_tokens": "max_tokens",
    "budget_cost": "max_cost",
    "budget_seconds": "max_seconds",
}
"""--budget-* → the ``Budget`` field it sets (the API's ``budget=None`` is ``Budget()``)."""

CONVERTED: dict[str, dict[str, tuple[str, Callable[[Any, Any], bool]]]] = {
    "optimize": {
        # --max-errors is text ("20%"); the API's default is 0.2: the same limit once parsed.
        "max_errors": ("max_errors", lambda cli, a: ErrorLimit.of(cli) == ErrorLimit.of(a)),
        # A flag that turns the API's evaluate_test=True off.
        "no_test": ("evaluate_test", lambda cli, a: cli is (not a)),
    },
    "evaluate": {
        "max_errors": ("max_errors", lambda cli, a: ErrorLimit.of(cli) == ErrorLimit.of(a)),
        # A flag that turns the API's cache=True off; --cache (a path) unset passes the API's default itself.
        "no_cache": ("cache", lambda cli, a: cli is (a is False)),
    },
}
"""command → CLI parameter → (API argument, the check that both defaults mean the same)."""

NOT_MIRRORED = {
    "optimize": {
        "task_arg": "the task as an argument; the API's task has no default",
        "task": "the API's task has no default (the CLI's may come as [TASK] or, with --resume, from the run)",
        "runs_dir": "not the API's run_dir (None: write nothing): the CLI always records its run in a new "
        "directory under this one",
        "resume": "a run directory to continue (api.resume), not the API's resume=True flag",
        "cache": "a path; unset passes the API's default (True: the default cache file), which a path cannot hold",
        "set_": "CLI only: optimizer settings (the API takes an Optimizer)",
        "storage": "CLI only: structure_search's storage setting (as --set storage=URL)",
        "study": "CLI only: structure_search's study_name setting (as --set study_name=NAME)",
        "api_base": "CLI only: backend option of the model built for the API",
        "model_opt": "CLI only: backend options of the model built for the API",
        "json_out": "CLI only: output format",
        "quiet": "CLI only: progress bars",
        "verbose": "CLI only: logging",
    },
    "evaluate": {
        "task": "the API's task has no default",
        "cache": "a path; unset passes the API's default (True: the default cache file), which a path cannot hold",
        "api_base": "CLI only: backend option of the model built for the API",
        "model_opt": "CLI only: backend options of the model built for the API",
        "json_out": "CLI only: output format",
        "quiet": "CLI only: progress bar",
        "show_errors": "CLI only: output",
    },
    "spread": {
        "task": "the API's task has no default",
        "cache": "a path; unset passes the API's default (True: the default cache file), which a path cannot hold",
        "max_errors": "api.spread takes a tracker, not max_errors: checked against evaluate's default below",
        "json_out": "CLI only: output format",
    },
    "robustness": {
        "task": "the API's task has no default",
        "cache": "a path; unset passes the API's default (True: the default cache file), which a path cannot hold",
        "max_errors": "api.robustness takes a tracker, not max_errors: evaluate's default, as for spread",
        "json_out": "CLI only: output format",
    },
}
"""command → CLI parameter → why its default is not compared with an API argument of the same name."""

DELIBERATE: dict[str, dict[str, str]] = {}
"""command → CLI parameter → why its default differs from the API's on purpose. None at the moment: optimize's
--optimizer and the API's optimizer= are both ``auto``; evaluate's --split is the API's ``dev``."""


def cli_defaults(command: str) -> dict[str, Any]:
    """The click parameters of ``promptopt <command>`` by name, with their defaults."""
    group = typer.main.get_command(app)
    return {p.name: p.default for p in group.commands[command].params if p.name is not None}  # type: ignore[attr-defined]


def api_defaults(command: str) -> dict[str, Any]:
    params = inspect.signature(API[command]).parameters
    return {n: p.default for n, p in params.items() if p.default is not p.empty}


@pytest.mark.parametrize("command", sorted(API))
def test_every_option_is_classified(command: str) -> None:
    """A new option must either mirror an API argument (and be checked) or be listed with its reason."""
    known = (
        set(api_defaults(command))
        | set(RENAMED.get(command, {}))
        | set(CONVERTED.get(command, {}))
        | set(NOT_MIRRORED.get(command, {}))
        | set(DELIBERATE.get(command, {}))
        | (set(BUDGET_OPTIONS) if command == "optimize" else set())
    )
    unclassified = sorted(set(cli_defaults(command)) - known)
    assert not unclassified, f"{command}: options neither mirroring an API argument nor listed: {unclassified}"


@pytest.mark.parametrize("command", sorted(API))
def test_mirrored_options_take_the_api_default(command: str) -> None:
    cli, api_side = cli_defaults(command), api_defaults(command)
    renamed = RENAMED.get(command, {})
    skipped = set(CONVERTED.get(command, {})) | set(NOT_MIRRORED.get(command, {})) | set(DELIBERATE.get(command, {}))
    compared = {name: renamed.get(name, name) for name in cli if name not in skipped and name not in BUDGET_OPTIONS}
    assert compared, command
    differing = {
        name: (cli[name], api_side[arg])
        for name, arg in compared.items()
        if arg in api_side and cli[name] != api_side[arg]
    }
    assert not differing, f"{command}: CLI default vs API default: {differing}"
    missing = sorted(arg for arg in compared.values() if arg not in api_side)
    assert not missing, f"{command}: options mirroring no API argument, list them in NOT_MIRRORED: {missing}"


@pytest.mark.parametrize("command", sorted(CONVERTED))
def test_converted_options_mean_the_api_default(command: str) -> None:
    cli, api_side = cli_defaults(command), api_defaults(command)
    for name, (arg, same) in CONVERTED[command].items():
        assert same(cli[name], api_side[arg]), f"{command} --{name}: {cli[name]!r} vs the API's {arg}={api_side[arg]!r}"


def test_budget_options_are_an_unlimited_budget() -> None:
    cli = cli_defaults("optimize")
    budget = {f.name: f.default for f in fields(Budget)}
    assert api_defaults("optimize")["budget"] is None  # = Budget()
    assert {name: cli[name] for name in BUDGET_OPTIONS} == {name: budget[f] for name, f in BUDGET_OPTIONS.items()}


def test_spread_stops_on_failed_calls_like_evaluate() -> None:
    """api.spread has no max_errors (it takes a tracker, whose default has no limit); the command line sets
    evaluate's default limit on the tracker it passes."""
    assert ErrorLimit.of(cli_defaults("spread")["max_errors"]) == ErrorLimit.of(api_defaults("evaluate")["max_errors"])
    assert "max_errors" not in api_defaults("spread")
    assert BudgetTracker().max_errors == ErrorLimit(share=None)


def test_the_named_defaults() -> None:
    """The two defaults that used to contradict each other: now one value each, on both sides."""
    assert cli_defaults("optimize")["optimizer"] == api_defaults("optimize")["optimizer"] == "auto"
    assert cli_defaults("evaluate")["split"] == api_defaults("evaluate")["split"] == "dev"
    assert cli_defaults("spread")["split"] == api_defaults("spread")["split"] == "test"


def test_no_deliberate_difference_is_stale() -> None:
    for command, options in DELIBERATE.items():
        cli, api_side = cli_defaults(command), api_defaults(command)
        for name in options:
            assert cli[name] != api_side[RENAMED.get(command, {}).get(name, name)], f"{command} --{name} agrees now"
