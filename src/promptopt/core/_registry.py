"""A small generic name → factory registry with lazy entries and 'did you mean' errors."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from importlib.metadata import entry_points
from typing import Any, Generic, TypeVar

from promptopt.core.exceptions import ConfigError, UnknownComponentError

# every registry maps names to factories (classes or functions); ``build`` calls them
T = TypeVar("T", bound=Callable[..., Any])


class Registry(Generic[T]):
    """Maps lowercase names to objects; entries may be ``"module:attr"`` strings imported on first use.

    Third-party packages add entries through the entry-point group ``group``.
    """

    def __init__(self, kind: str, *, group: str | None = None) -> None:
        self.kind = kind
        self.group = group
        self._items: dict[str, T | str] = {}
        self._entry_points_loaded = group is None

    def add(self, name: str, obj: T | str) -> None:
        """Register ``obj`` (or a lazy ``"module:attr"``) as ``name``; the object a lazy entry names replaces it."""
        old = self._items.get(name)
        if isinstance(old, str) and not isinstance(obj, str) and old == _where(obj):
            self._items[name] = obj
            return
        if name in self._items and old is not obj:
            raise ValueError(f"{self.kind} '{name}' is registered twice ({self._items[name]!r} and {obj!r}).")
        self._items[name] = obj

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            self.add(name, obj)
            return obj

        return deco

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded or self.group is None:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            self._items.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def get(self, name: str) -> T:
        self._load_entry_points()
        try:
            obj = self._items[name]
        except KeyError:
            hint = (
                f"Third-party {self.kind}s register through the '{self.group}' entry-point group." if self.group else ""
            )
            raise UnknownComponentError(self.kind, name, self._items, hint=hint) from None
        if isinstance(obj, str):
            module, _, attr = obj.partition(":")
            loaded: T = getattr(importlib.import_module(module), attr)
            self._items[name] = loaded
            return loaded
        return obj

    def build(self, name: str, *, source: str | None, field: str, **kwargs: Any) -> Any:
        """Call the factory registered as ``name``; errors name the file and field the name came from."""
        try:
            factory = self.get(name)
        except UnknownComponentError as exc:
            raise exc.located(source=source, field=field) from None
        try:
            return factory(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"bad arguments for {self.kind} '{name}': {exc}", source=source, field=field) from exc


def _where(obj: object) -> str:
    return f"{getattr(obj, '__module__', '')}:{getattr(obj, '__qualname__', '')}"


def name_and_options(spec: str | Mapping[str, Any], kind: str, *, source: str | None) -> tuple[str, dict[str, Any]]:
    """A component spec as a name and its options: ``"name"``, or ``{name: ..., **options}`` (task.yaml's form)."""
    if isinstance(spec, str):
        return spec, {}
    options = dict(spec)
    name = options.pop("name", None)
    if not isinstance(name, str):
        raise ConfigError(f"a {kind} mapping needs 'name'", source=source, field=kind)
    return name, options
