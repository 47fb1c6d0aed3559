"""Layer 8, the ``promptopt`` command line (Typer)."""

from promptopt.cli.app import app, main

__all__ = ["app", "main"]
