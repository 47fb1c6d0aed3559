"""Optimizer presets: ``optimizers/<name>.yaml`` files that fill in an optimizer's config.

Format::

    optimizer: ape            # registered optimizer name
    description: One line shown by `promptopt optimizers list`.
    config: {n_prompts: 8}    # fields of the optimizer's Config
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from promptopt.core.exceptions import ConfigError, UnknownComponentError
from promptopt.core.taskfile import read_yaml
from promptopt.optimizers.base import OPTIMIZERS, Optimizer
from promptopt.optimizers.config import checked


def preset_dirs() -> list[Path]:
    """$PROMPTOPT_OPTIMIZERS (os.pathsep list), ./optimizers, the bundled presets."""
    dirs = [Path(p) for p in os.environ.get("PROMPTOPT_OPTIMIZERS", "").split(os.pathsep) if p]
    dirs.append(Path.cwd() / "optimizers")
    here = Path(__file__).resolve().parents[1]  # the promptopt package
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
    spec = read_yaml(path)
    if not isinstance(spec, dict) or not isinstance(spec.get("optimizer"), str):
        raise ConfigError("must be a mapping with 'optimizer: <name>'.", source=str(path), field="optimizer")
    unknown = sorted(set(spec) - {"optimizer", "description", "config"})
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; allowed: optimizer, description, config.", source=str(path))
    if not isinstance(spec.get("config") or {}, dict):
        raise ConfigError("must be a mapping of settings.", source=str(path), field="config")
    return spec


def load_optimizer(name_or_path: str, **overrides: Any) -> Optimizer:
    """An optimizer from a preset name, a preset .yaml path or a registered optimizer name.

    Settings (the preset's ``config`` and ``overrides``) are checked against the optimizer's Config field types
    first (:func:`check_settings`), so a wrong type is refused naming the field and the type it needs.
    """
    path = Path(name_or_path)
    presets = available_presets()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        preset_path: Path | None = path
    else:
        preset_path = presets.get(name_or_path)
    if preset_path is not None:
        source = str(preset_path)
        spec = read_preset(preset_path)
        cls = _registered(spec["optimizer"], source=source)
        settings = check_settings(cls, spec.get("config") or {}, source=source)
        return cls.from_config({**settings, **check_settings(cls, overrides, source=None)}, source=source)
    if name_or_path in OPTIMIZERS:
        return build_optimizer(name_or_path, overrides)
    raise UnknownComponentError(
        "optimizer",
        name_or_path,
        set(OPTIMIZERS.names()) | set(presets),
        hint="Names are registered optimizers or presets in optimizers/*.yaml.",
    )


def build_optimizer(name: str, settings: Mapping[str, Any], *, source: str | None = None) -> Optimizer:
    """The registered optimizer ``name`` with ``settings`` (no preset); errors name ``source``, where they came from."""
    cls = _registered(name, source=source)
    return cls.from_config(check_settings(cls, settings, source=source), source=source)


def _registered(name: str, *, source: str | None) -> type[Optimizer]:
    try:
        return OPTIMIZERS.get(name)
    except UnknownComponentError as exc:
        raise exc.located(source=source, field="optimizer") from None


def check_settings(cls: type[Optimizer], settings: Mapping[str, Any], *, source: str | None) -> dict[str, Any]:
    """``settings`` (YAML or ``--set`` values) checked against the types of ``cls.Config``'s fields and converted to
    them (a list to a tuple, an integer to a float, one value where a tuple is expected to a 1-tuple).

    A value of the wrong type is a :class:`ConfigError` naming the field, the type it needs and its default; names
    that are not fields are left for :meth:`Optimizer.from_config` to refuse.
    """
    names = {f.name for f in dataclasses.fields(cls.Config)}
    return {
        name: checked(cls.Config, name, value, source=source) if name in names else value
        for name, value in settings.items()
    }
