"""Optional dependencies: import them late, fail with the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from promptopt.core.exceptions import MissingDependencyError


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{feature} requires '{module}', which is not installed. "
            f"Install it with: pip install 'promptopt-toolkit[{extra}]'"
        ) from exc
