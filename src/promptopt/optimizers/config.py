"""The base of every optimizer's settings, and the one check of a setting against its declared type.

A field's annotation is its specification: ``Literal[...]`` lists its choices, ``tuple[X, ...]`` takes a list of X
(a single X is taken as a 1-tuple; a tuple of choices must not be empty), ``Mapping[K, V]``, ``int``, ``float`` (an
integer is accepted), ``str``, ``bool`` and unions of those; a field's ``min`` metadata bounds a number, or each
number of a tuple, which must then not be empty. Every config checks and converts its fields on construction, from
Python, a preset YAML or ``--set`` alike, and refuses a wrong value naming the field.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from types import NoneType, UnionType
from typing import Any, Literal, TypeGuard, TypeVar, Union, get_args, get_origin, get_type_hints

from promptopt.core.exceptions import ConfigError

C = TypeVar("C", bound=str)


def is_one_of(value: str, choices: tuple[C, ...]) -> TypeGuard[C]:
    """``value`` is one of ``choices`` (a tuple of a ``Literal`` type's values, like ``STRATEGIES``): narrows a
    string setting, checked when its config was made, to the ``Literal`` the functions it goes to take."""
    return value in choices


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """Base of every optimizer config: frozen, keyword-only, every field defaulted."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = checked(type(self), f.name, getattr(self, f.name))
            object.__setattr__(self, f.name, value)
            bounds = f.metadata.get("min")
            if bounds is None or value is None:
                continue
            if isinstance(value, tuple):  # a list of numbers: non-empty, each at least the bound
                if not value or min(value) < bounds:
                    raise ConfigError(f"must be a non-empty list of numbers >= {bounds}, got {value!r}", field=f.name)
            elif value < bounds:
                raise ConfigError(f"must be >= {bounds}, got {value!r}", field=f.name)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return get_type_hints(cls)


def checked(cls: type, name: str, value: Any, *, source: str | None = None) -> Any:
    """``value`` for field ``name`` of config class ``cls``, converted to the field's type where that loses
    nothing (a list to a tuple, an integer to a float); a :class:`ConfigError` naming the field, the type it needs
    and its default otherwise."""
    hint = _hints(cls)[name]
    try:
        return _as_type(value, hint)
    except _Mismatch:
        default = {f.name: f.default for f in dataclasses.fields(cls)}[name]
        shown = f" (default: {_yaml(default)})" if default is not dataclasses.MISSING else ""
        raise ConfigError(f"must be {_describe(hint)}{shown}, got {_yaml(value)}.", source=source, field=name) from None


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
        if get_origin(args[0]) is Literal:
            return "a non-empty list of " + ", ".join(_yaml(a) for a in get_args(args[0]))
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
        if not items and get_origin(args[0]) is Literal:
            raise _Mismatch  # choose at least one
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
