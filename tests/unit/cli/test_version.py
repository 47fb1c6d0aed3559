"""``promptopt --version`` and ``python -m promptopt.cli --version`` print the distribution's version."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import PackageNotFoundError

from typer.testing import CliRunner

import promptopt
from promptopt.cli.app import DISTRIBUTION, app, version

runner = CliRunner()


def test_version_is_the_installed_distributions():
    from importlib.metadata import version as installed

    assert version() == installed("promptopt-toolkit")


def test_version_falls_back_to_the_package_version(monkeypatch):
    def missing(name: str) -> str:
        raise PackageNotFoundError(name)

    monkeypatch.setattr("importlib.metadata.version", missing)
    assert version() == promptopt.__version__


def test_the_version_option_prints_it_and_exits_0():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"promptopt {version()}\n"


def test_python_m_promptopt_cli_version():
    proc = subprocess.run(
        [sys.executable, "-m", "promptopt.cli", "--version"], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"promptopt {version()}\n"


def test_commands_still_work_with_the_root_options():
    result = runner.invoke(app, ["tasks", "list"])
    assert result.exit_code == 0 and "sst2" in result.output
    assert DISTRIBUTION == "promptopt-toolkit"
