"""Everything promptopt raises. Messages say what was wrong, the value received and how to fix it."""

from __future__ import annotations

from collections.abc import Iterable
from difflib import get_close_matches


class PromptOptError(Exception):
    """Base class of every promptopt error."""


class ConfigError(PromptOptError, ValueError):
    """Bad user input: a task file, an optimizer config, a CLI option.

    ``source`` names the file (or object) and ``field`` the key that is wrong, so the CLI can print one
    precise line.
    """

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None) -> None:
        self.message = message
        self.source = source
        self.field = field
        where = f"{source}: " if source else ""
        if field:  # a command-line option ("--cache") or a key of a file or config
            where += f"option {field}: " if field.startswith("-") else f"field '{field}': "
        super().__init__(where + message)

    def located(self, *, source: str | None, field: str | None = None) -> ConfigError:
        """The same error naming the file (and field) it came from, unless it already names its own."""
        return type(self)(self.message, source=self.source or source, field=self.field or field)


class TemplateError(ConfigError):
    """A template that does not parse or refers to variables the data does not have."""


class DataError(ConfigError):
    """A data file that is missing, empty or lacks a column."""


class UnknownComponentError(ConfigError, KeyError):
    """An unknown optimizer, model, metric, parser or task name."""

    def __init__(
        self,
        kind: str,
        name: str,
        available: Iterable[str],
        *,
        hint: str = "",
        source: str | None = None,
        field: str | None = None,
    ) -> None:
        names = sorted(available)
        close = get_close_matches(name, names, n=1)
        msg = f"Unknown {kind} '{name}'."
        if close:
            msg += f" Did you mean '{close[0]}'?"
        msg += f" Available: {', '.join(names) if names else '(none)'}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg, source=source, field=field)
        self.kind = kind
        self.name = name
        self.available = names
        self.hint = hint

    def located(self, *, source: str | None, field: str | None = None) -> UnknownComponentError:
        return UnknownComponentError(
            self.kind,
            self.name,
            self.available,
            hint=self.hint,
            source=self.source or source,
            field=self.field or field,
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class MissingDependencyError(PromptOptError, ImportError):
    """An optional dependency (an extra) is not installed."""


class BackendError(PromptOptError):
    """A model backend failed (API error, timeout, bad response)."""

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message)
        self.retryable = retryable


class TooManyErrors(PromptOptError):
    """More model calls failed than ``max_errors`` allows: an outage or a misconfigured endpoint, not a score."""


class BudgetExhausted(PromptOptError):
    """The run budget (calls, tokens, cost or wall time) is spent."""


class ProposalParseError(PromptOptError):
    """A proposer model's output did not contain a usable prompt; carries the raw output."""

    def __init__(self, message: str, *, raw_output: str) -> None:
        super().__init__(message)
        self.raw_output = raw_output
