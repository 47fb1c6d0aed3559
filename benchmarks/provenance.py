"""What every results file records about how it was made: commit, versions, command, machine load."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def provenance() -> dict[str, Any]:
    """Commit (and whether the tree had uncommitted changes), the command line, versions, CPU and load."""
    versions = {"python": platform.python_version()}
    for dist in ("promptopt-toolkit", "torch", "transformers", "peft", "optuna"):
        with contextlib.suppress(PackageNotFoundError):
            versions[dist] = version(dist)
    return {
        "commit": _git("rev-parse", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions,
        "cpu": platform.processor() or platform.machine(),
        "threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }
