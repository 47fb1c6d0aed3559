"""``python -m promptopt.cli``."""

from promptopt.cli.app import main

main()
