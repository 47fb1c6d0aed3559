"""Optimizer presets: ``optimizers/<name>.yaml`` files that fill in an optimizer's config.

Format::

    optimizer: ape            # registered optimizer name
    description: One line shown by `promptopt optimizers list`.
    config: {n_prompts: 8}    # fields of the optimizer's Config
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from promptopt.exceptions import ConfigError, UnknownComponentError
from promptopt.optimizers import OPTIMIZERS, Optimizer


def preset_dirs() -> list[Path]:
    """$PROMPTOPT_OPTIMIZERS (os.pathsep list), ./optimizers, the bundled presets."""
    dirs = [Path(p) for p in os.environ.get("PROMPTOPT_OPTIMIZERS", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "optimizers")
    here = Path(__file__).resolve().parent
    dirs += [here / "_bundled" / "optimizers", here.parents[1] / "optimizers"]
    out: list[Path] = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in out:
            out.append(d.resolve())
    return out


def available_presets() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in preset_dirs():
        for f in sorted(d.glob("*.yaml")):
            found.setdefault(f.stem, f)
    return found


def read_preset(path: Path) -> dict[str, Any]:
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML: {exc}. Fix the syntax.", source=str(path)) from None
    if not isinstance(spec, dict) or not isinstance(spec.get("optimizer"), str):
        raise ConfigError("must be a mapping with 'optimizer: <name>'.", source=str(path), field="optimizer")
    unknown = sorted(set(spec) - {"optimizer", "description", "config"})
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; allowed: optimizer, description, config.", source=str(path))
    if not isinstance(spec.get("config") or {}, dict):
        raise ConfigError("must be a mapping of settings.", source=str(path), field="config")
    return spec


def load_optimizer(name_or_path: str, **overrides: Any) -> Optimizer:
    """An optimizer from a preset name, a preset .yaml path or a registered optimizer name."""
    path = Path(name_or_path)
    presets = available_presets()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        preset_path: Path | None = path
    else:
        preset_path = presets.get(name_or_path)
    if preset_path is not None:
        spec = read_preset(preset_path)
        cls = OPTIMIZERS.get(spec["optimizer"])
        return cls.from_config({**(spec.get("config") or {}), **overrides}, source=str(preset_path))
    if name_or_path in OPTIMIZERS:
        return OPTIMIZERS.get(name_or_path).from_config(overrides)
    raise UnknownComponentError(
        "optimizer",
        name_or_path,
        set(OPTIMIZERS.names()) | set(presets),
        hint="Names are registered optimizers or presets in optimizers/*.yaml.",
    )
