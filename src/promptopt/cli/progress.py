"""What the command line shows while it works: the Rich progress bars driven by runner events, and --verbose logging."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from promptopt.cli.errors import err
from promptopt.run.progress import progress_display


@contextmanager
def progress(enabled: bool) -> Iterator[Callable[[Any], None] | None]:
    """The Rich progress bars driven by runner events (budget bar + current evaluation bar) on stderr
    (:func:`promptopt.run.progress.progress_display`, which the API's ``progress=True`` uses too)."""
    with progress_display(enabled, console=err, display="bars") as handler:
        yield handler


def setup_logging(verbose: bool) -> None:
    """Warnings only, or (``--verbose``) every debug record of promptopt on stderr."""
    logging.getLogger("promptopt").setLevel(logging.DEBUG if verbose else logging.WARNING)
    if verbose:
        from rich.logging import RichHandler

        logging.getLogger("promptopt").addHandler(RichHandler(console=err, show_path=False))
