"""A run directory: its saved settings (config.json), naming, and the versions a result records.

Files: ``config.json`` (the settings :func:`promptopt.resume` needs), ``history.jsonl`` (one line per trial),
``usage.json`` (spend so far), ``result.json``, ``test_results.json`` and the best prompt's export.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from promptopt.core._files import write_text_atomic
from promptopt.core.exceptions import ConfigError
from promptopt.models.budget import BudgetTracker
from promptopt.run.history import History, TrialRecord

CONFIG_FILE = "config.json"
RESUME_KEYS = (
    "task",
    "optimizer",
    "optimizer_config",
    "model",
    "proposer",
    "budget",
    "seed",
    "cache",
    "evaluate_test",
    "batch_size",
    "mode",
)
"""The settings in a run's config.json that :func:`resume` needs."""


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A run directory's saved settings; a missing, damaged or incomplete config.json is a ConfigError naming it."""
    cfg_file = run_dir / CONFIG_FILE
    if not cfg_file.is_file():
        raise ConfigError(
            f"cannot resume: no {CONFIG_FILE} here; give a run directory made by promptopt optimize.",
            source=str(run_dir),
        )
    damaged = "The run directory is damaged: restore the file or start a new run."
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"not valid JSON ({exc.msg}, line {exc.lineno}). {damaged}", source=str(cfg_file)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read it ({exc}). {damaged}", source=str(cfg_file)) from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"not a JSON object of run settings. {damaged}", source=str(cfg_file))
    missing = [k for k in RESUME_KEYS if k not in cfg]
    if missing:
        raise ConfigError(f"missing from the saved settings. {damaged}", source=str(cfg_file), field=missing[0])
    return cfg


def new_run_dir(root: str | Path, task: str, optimizer: str) -> Path:
    """A new run directory under ``root``, created here so that runs started in the same second (other processes
    on the same root) take different names; if it cannot be created, the name only (the run says why)."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(root) / f"{stamp}-{Path(task).name}-{Path(optimizer).stem}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            if not path.exists():  # not this name that is taken: a file in the way of ``root``
                return path
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        except OSError:
            return path


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("promptopt-toolkit", "torch", "transformers", "litellm"):
        if dist == "promptopt-toolkit" or dist in sys.modules:
            try:
                out[dist] = version(dist)
            except PackageNotFoundError:
                out[dist] = "unknown"
    return out


def readable_history(path: Path) -> list[TrialRecord]:
    """The interrupted run's trial records (see :meth:`History.load`); none if it wrote none."""
    return History.load(path) if path.is_file() else []


def prepare_run_dir(out: Path, config: dict[str, Any], *, resume: bool, tracker: BudgetTracker) -> None:
    if resume:
        saved = read_run_config(out)
        changed = sorted(
            k for k in ("task", "optimizer", "optimizer_config", "model", "proposer", "seed") if saved[k] != config[k]
        )
        if changed:
            raise ConfigError(f"cannot resume with different settings ({', '.join(changed)}).", source=str(out))
        if (out / "usage.json").is_file():
            tracker.restore(out / "usage.json")
    elif out.is_file():
        raise ConfigError("a file is in the run directory's place; pick another directory.", source=str(out))
    elif out.exists() and any(out.iterdir()):
        raise ConfigError(
            "run directory is not empty; pick a new one or resume this run with --resume.", source=str(out)
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out / CONFIG_FILE, json.dumps(config, indent=2) + "\n")  # a killed resume stays resumable
    except OSError as exc:
        raise ConfigError(
            f"cannot write the run directory ({exc.strerror}: {exc.filename}); give a writable directory.",
            source=str(out),
            field=None if resume else "run_dir",
        ) from None
