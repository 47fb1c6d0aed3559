"""Optimizer presets: ``optimizers/<name>.yaml`` files that fill in an optimizer's config.

Format::

    optimizer: ape            # registered optimizer name
    description: One line shown by `promptopt optimizers list`.
    config: {n_prompts: 8}    # fields of the optimizer's Config
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from promptopt.core.exceptions import ConfigError, UnknownComponentError
from promptopt.core.taskfile import read_yaml
from promptopt.optimizers.base import OPTIMIZERS, Optimizer


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
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    hints = get_type_hints(cls.Config)
    out = dict(settings)
    for name, value in settings.items():
        if name not in fields:
            continue
        try:
            out[name] = _as_type(value, hints[name])
        except _Mismatch:
            default = fields[name].default
            shown = f" (default: {_yaml(default)})" if default is not dataclasses.MISSING else ""
            raise ConfigError(
                f"must be {_describe(hints[name])}{shown}, got {_yaml(value)}.", source=source, field=name
            ) from None
    return out


class _Mismatch(ValueError):
    """A value that does not have the field's type."""


_PLURAL = {int: "integers", float: "numbers", str: "strings", bool: "true/false values"}


def _describe(hint: Any) -> str:
    """What a value of type ``hint`` looks like, for error messages."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(_yaml(a) for a in args)
    if origin is tuple:
        return f"a list of {_PLURAL.get(args[0], 'values')} like [{_example(args[0])}, ...]"
    if origin is Mapping:
        return f"a mapping like {{{_example(args[0])}: {_example(args[1])}}}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string", NoneType: "null"}.get(
        hint, str(hint)
    )


def _example(hint: Any) -> str:
    return {int: "1", float: "0.5", str: "name"}.get(hint, "...")


def _yaml(value: Any) -> str:
    """``value`` as it would be written in YAML or ``--set`` (null, true, [1, 2])."""
    return json.dumps(list(value) if isinstance(value, tuple) else value, default=str)


def _as_type(value: Any, hint: Any) -> Any:
    """``value`` converted to ``hint`` where that loses nothing; raises :class:`_Mismatch` otherwise."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, UnionType):
        for arm in args:
            try:
                return _as_type(value, arm)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is Literal:
        if value in args:
            return value
        raise _Mismatch
    if origin is tuple:
        items = value if isinstance(value, list | tuple) else [value]
        return tuple(_as_type(v, args[0]) for v in items)
    if origin is Mapping:
        if not isinstance(value, Mapping):
            raise _Mismatch
        return {_as_type(k, args[0]): _as_type(v, args[1]) for k, v in value.items()}
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool, NoneType):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        raise _Mismatch
    return value  # a type not listed here is left to the Config's own checks
