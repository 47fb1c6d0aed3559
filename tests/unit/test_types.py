"""mypy over the package, with the settings in pyproject.toml ``[tool.mypy]``: no errors.

It runs as part of ``python -m pytest``, so type errors fail CI like any other test.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_reports_no_errors() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"],  # files and settings: pyproject.toml [tool.mypy]
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, f"mypy (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
