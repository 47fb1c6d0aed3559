"""The base of every optimizer's settings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from promptopt.core.exceptions import ConfigError


@dataclass(frozen=True, kw_only=True)
class OptimizerConfig:
    """Base of every optimizer config: frozen, keyword-only, every field defaulted."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            bounds = f.metadata.get("min")
            if bounds is not None and value is not None and value < bounds:
                raise ConfigError(f"must be >= {bounds}, got {value!r}", field=f.name)
