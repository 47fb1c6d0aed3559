"""The base of every optimizer's settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TypeGuard, TypeVar

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
            value = getattr(self, f.name)
            bounds = f.metadata.get("min")
            if bounds is not None and value is not None and value < bounds:
                raise ConfigError(f"must be >= {bounds}, got {value!r}", field=f.name)
